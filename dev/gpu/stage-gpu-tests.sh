#!/usr/bin/env bash
# Stages the tests of Kvq.Cuda.Tests for the GPU machine (no .NET there) in <main checkout>/.devrun-gputests (~45 MB,
# under the 64 MiB that the `run` tool carries): dev/gpu/GpuTests, the test runner, as one NativeAOT binary with the
# test assembly compiled in; books-19m (CudaModelGpuTests); and device-gpu-tests.sh.
# Then, on the GPU machine (the `run` tool, carry [".devrun-gputests"]), from the checkout root:
#   bash .devrun-gputests/device-gpu-tests.sh       (log in $OUT/gpu-tests.log; every GpuFact must run and pass)
# Usage: dev/gpu/stage-gpu-tests.sh [STAGE_DIR]. KVQ_WITH_CLI=1 adds the kvq binary (NativeAOT, ~12 MB) for the
# device script's `kvq generate --gpus` checks. KVQ_ISA: the CPU instruction set the binary assumes (default
# x86-64-v4, AVX-512, as the JIT uses here; x86-64-v3 for a host without AVX-512). KVQ_SHARED: fixtures.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
stage="${1:-$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir | xargs dirname)/.devrun-gputests}"
shared="${KVQ_SHARED:-$repo/../shared}"
isa="${KVQ_ISA:-x86-64-v4}"
publish="$(mktemp -d)"
log="$(mktemp)"
trap 'rm -rf "$publish" "$log"' EXIT
if ! dotnet publish "$here/GpuTests" -r linux-x64 -c Release -p:PublishAot=true -p:IlcInstructionSet="$isa" \
     -o "$publish" >"$log" 2>&1; then
  cat "$log"
  exit 1
fi
if grep -q ": warning " "$log"; then
  grep ": warning " "$log" | sort -u
  echo "the runner's NativeAOT publish gave warnings" >&2
  exit 1
fi
if [ "${KVQ_WITH_CLI:-0}" = 1 ]; then
  cli="$(mktemp -d)"
  trap 'rm -rf "$publish" "$log" "$cli"' EXIT
  if ! dotnet publish "$repo/src/Kvq.Cli" -r linux-x64 -c Release -p:PublishAot=true -p:IlcInstructionSet="$isa" -o "$cli" >"$log" 2>&1; then
    cat "$log"
    exit 1
  fi
fi
rm -rf "$stage"
mkdir -p "$stage/models"
[ "${KVQ_WITH_CLI:-0}" = 1 ] && install -m 755 "$cli/kvq" "$stage/kvq"
# Only the native binary: the test assembly, xunit and Kvq are compiled into it (the rest of the folder is symbols,
# the JIT apphost of KernelLab and xunit's VSTest adapter, none of which it loads).
install -m 755 "$publish/GpuTests" "$stage/GpuTests"
install -m 644 "$shared/models/books-19m.gguf" "$stage/models/"
cp "$here/device-gpu-tests.sh" "$stage/"
# Here (no GPU): every test found, the GPU ones skipped with the reason, the host ones passing.
if ! (cd "$stage" && ./GpuTests >"$log" 2>&1); then
  cat "$log"
  echo "the staged runner fails here already" >&2
  exit 1
fi
tail -n 1 "$log" | sed 's/^/here: /'
bytes=$(du -sb "$stage" | cut -f1)
echo "staged in $stage: $(du -sh "$stage" | cut -f1) ($bytes bytes; GpuTests $(du -h "$stage/GpuTests" | cut -f1), $isa)"
if [ "$bytes" -gt $((60 * 1024 * 1024)) ]; then
  echo "the stage is over 60 MiB: too much to carry" >&2
  exit 1
fi
echo "on the GPU machine, from the checkout root: bash $(basename "$stage")/device-gpu-tests.sh"
