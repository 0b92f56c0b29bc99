#!/usr/bin/env bash
# Runs on the GPU machine from the checkout root: two NativeAOT `kvq` binaries (A and B, e.g. an older commit and main)
# decode books-19m on the device in alternating rounds, so that a change in GPU decode speed between builds is told
# from a change between machines (issue 13: run 31's CLI check decoded at 842 tok/s, run 30's at 1,428, on different
# H100s). Usage: dev/gpu/cli-ab.sh A_KVQ B_KVQ MODEL [ROUNDS]; prints one line per round and binary, then the medians.
set -uo pipefail
a="$1"; b="$2"; m="$3"; rounds="${4:-5}"
out="${OUT:-/tmp/kvq-cli-ab}"; mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KVQ_CUBIN_CACHE="${KVQ_CUBIN_CACHE:-/tmp/kvq-cubin}"
p="The old man looked at the sea and said"
run() { "$1" generate -m "$m" -p "$p" -n 200 --temperature 0 --device cuda --device-weights f32 2>&1; }
# warm-up (NVRTC compiles, cubin cache filled) for both
run "$a" >/dev/null; run "$b" >/dev/null
for r in $(seq 1 "$rounds"); do
  for which in A B; do
    bin="$a"; [ "$which" = B ] && bin="$b"
    line="$(run "$bin" | grep -m1 'decode:')"
    echo "round $r $which: $line" | tee -a "$out/cli-ab.log"
  done
done
for which in A B; do
  grep " $which: " "$out/cli-ab.log" | sed -E 's/.*decode: [0-9]+ tokens, ([0-9.]+) tok\/s.*/\1/' | sort -n \
    | awk -v w="$which" '{v[NR]=$1} END {printf "%s: median decode %.1f tok/s over %d rounds (min %.1f, max %.1f)\n", w, v[int((NR+1)/2)], NR, v[1], v[NR]}' \
    | tee -a "$out/cli-ab.log"
done
