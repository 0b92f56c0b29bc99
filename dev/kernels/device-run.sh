#!/usr/bin/env bash
# Runs on the GPU machine from the checkout root (staged by run-on-gpu.sh). Results land in $OUT when set.
set -uo pipefail
out="${OUT:-/tmp/kvq-lab}"; mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KVQ_CUBIN_CACHE=/tmp/kvq-cubin
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$out/gpu.txt"
sizes="${SIZES:-4096,32768,131072,1048576}"
.devrun/lab/KernelLab --sizes "$sizes" --json "$out/lab.jsonl" ${LAB_ARGS:-} 2>&1 | tee "$out/lab.log"
lab=${PIPESTATUS[0]}
if [ "$sizes" != none ]; then
  PYTHONUNBUFFERED=1 python3 .devrun/sdpa_baseline.py --sizes "$sizes" --lab "$out/lab.jsonl" --out "$out/sdpa.jsonl" 2>&1 | tee "$out/sdpa.log"
fi
exit $lab
