#!/usr/bin/env bash
# Stages what a model run on the GPU machine needs in <main checkout>/.devrun-model (well under the 64 MiB that the
# `run` tool carries): kvq and dev/gpu/ModelCheck as NativeAOT binaries (no .NET there; no plotting libraries, nothing there plots), the
# books-19m model and the first ~60 KB of Moby Dick.
# Then, on the GPU machine (the `run` tool, carry [".devrun-model"]), from the checkout root:
#   bash .devrun-model/device-model-run.sh            (logs in $OUT, default /tmp/kvq-model)
# Usage: dev/gpu/stage-model-run.sh [STAGE_DIR]. KVQ_PROFILE: a books-19m KVQuant profile to stage. KVQ_ISA picks the CPU instruction set the binary assumes
# (default x86-64-v4, AVX-512, as the JIT uses here; x86-64-v3 for a host without AVX-512). KVQ_SHARED: fixtures.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
stage="${1:-$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir | xargs dirname)/.devrun-model}"
shared="${KVQ_SHARED:-$repo/../shared}"
isa="${KVQ_ISA:-x86-64-v4}"
rm -rf "$stage/kvq"
mkdir -p "$stage/kvq" "$stage/models" "$stage/text"
log="$(mktemp)"
if ! dotnet publish "$repo/src/Kvq.Cli" -r linux-x64 -c Release -p:PublishAot=true -p:IlcInstructionSet="$isa" \
     -o "$stage/kvq" >"$log" 2>&1; then
  cat "$log"
  exit 1
fi
# ModelCheck: CPU vs GPU logits, greedy text and the KVQuant device cache, in one process (dev/gpu/ModelCheck).
rm -rf "$stage/check"
if ! dotnet publish "$here/ModelCheck" -r linux-x64 -c Release -p:PublishAot=true -p:IlcInstructionSet="$isa" \
     -o "$stage/check" >"$log" 2>&1; then
  cat "$log"
  exit 1
fi
rm -f "$log" "$stage"/check/*.dbg "$stage"/check/*.pdb "$stage"/check/*.xml
# A KVQuant profile of books-19m (kvq calibrate; bench/results.sh makes reports/books19m.kvqp), for the nuq runs.
profile="${KVQ_PROFILE:-$repo/reports/books19m.kvqp}"
if [ -f "$profile" ]; then install -m 644 "$profile" "$stage/models/books19m.kvqp"
else rm -f "$stage/models/books19m.kvqp"; echo "no KVQuant profile at $profile (KVQ_PROFILE=...): the nuq steps will be skipped"; fi
# Debug symbols, and SkiaSharp/HarfBuzz (only the eval report's PNG plots load them; kvq runs without).
rm -f "$stage"/kvq/*.dbg "$stage"/kvq/*.pdb "$stage"/kvq/*.xml "$stage"/kvq/libSkiaSharp.so "$stage"/kvq/libHarfBuzzSharp.so
install -m 644 "$shared/models/books-19m.gguf" "$shared/models/books-19m.tokenizer.model" "$stage/models/"
# ~60 KB of the book, cut at a line end (the file is UTF-8 with CRLF; kvq normalises it).
head -c 61440 "$shared/text/books/pg2489_moby_dick.txt" | head -n -1 >"$stage/text/moby-dick-60k.txt"
cp "$here/device-model-run.sh" "$here/offload-2m.sh" "$here/graph-bench.sh" "$stage/"
bytes=$(du -sb "$stage" | cut -f1)
echo "staged in $stage: $(du -sh "$stage" | cut -f1) ($bytes bytes; kvq $(du -h "$stage/kvq/kvq" | cut -f1), $isa)"
if [ "$bytes" -gt $((60 * 1024 * 1024)) ]; then
  echo "the stage is over 60 MiB: too much to carry" >&2
  exit 1
fi
echo "on the GPU machine, from the checkout root: bash .devrun-model/device-model-run.sh"
