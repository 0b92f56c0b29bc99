#!/usr/bin/env bash
# Builds the kernel lab (NativeAOT) here and stages what one device run needs in <checkout>/.devrun, or in the
# folder given as the first argument (inside the checkout that the device run sends, git-excluded there).
# Then run, on the GPU machine (the `run` tool, carry [".devrun"]), the command this script prints last:
# the lab checks every kernel against the CPU reference, times them at 4k..1M tokens, and PyTorch's fp16 SDPA is
# timed in the same run; the combined table is printed last.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
stage="${1:-$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir | xargs dirname)/.devrun}"
mkdir -p "$stage"
dotnet publish "$here/KernelLab" -r linux-x64 -c Release -p:PublishAot=true -o "$stage/lab" >/dev/null
rm -f "$stage"/lab/*.dbg "$stage"/lab/*.pdb
cp "$here/sdpa_baseline.py" "$here/device-run.sh" "$stage/"
echo "staged in $stage ($(du -sh "$stage" | cut -f1)); on the device (carry [\"$(basename "$stage")\"]), from the checkout root:"
echo "  bash $(basename "$stage")/device-run.sh"
