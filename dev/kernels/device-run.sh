#!/usr/bin/env bash
# Runs on the GPU machine from the checkout root (staged by run-on-gpu.sh into a folder of the checkout, e.g. .devrun;
# the paths below are this script's own folder, so any stage folder works). Results land in $OUT when set.
# SIZES (default 4096,32768,131072,1048576; none = no single-layer timings and no SDPA), SDPA_SHAPES (mha,gqa) and
# LAB_ARGS narrow the run.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-/tmp/kvq-lab}"; mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KVQ_CUBIN_CACHE=/tmp/kvq-cubin
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv | tee "$out/gpu.txt"
sizes="${SIZES:-4096,32768,131072,1048576}"
"$here/lab/KernelLab" --sizes "$sizes" --json "$out/lab.jsonl" ${LAB_ARGS:-} 2>&1 | tee "$out/lab.log"
lab=${PIPESTATUS[0]}
if [ "$sizes" != none ]; then
  PYTHONUNBUFFERED=1 python3 "$here/sdpa_baseline.py" --sizes "$sizes" --shapes "${SDPA_SHAPES:-mha,gqa}" --lab "$out/lab.jsonl" --out "$out/sdpa.jsonl" 2>&1 | tee "$out/sdpa.log"
fi
exit $lab
