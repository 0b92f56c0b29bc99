#!/usr/bin/env bash
# Issue 20's GPU Must show in one command, on the GPU machine from the checkout root, in the folder that
# dev/gpu/stage-model-run.sh stages (.devrun-model: ModelCheck as a NativeAOT binary, no .NET needed there):
#   bash .devrun-model/offload-2m.sh            (log: $OUT/offload-2m.log, default /tmp/kvq-offload)
# The LLaMA-7B-shaped model (random f16 weights) over a KVQuant cache whose older blocks live in pinned host memory
# (src/Kvq.Cuda/Offload): `full` mode against on-device attention at 128k tokens (logits rel L2, target <= 1e-5), then
# 2M tokens with a 2% block budget (decode tok/s, prefetch hit rate, hidden transfer share, host and device memory),
# one table at the end. The KV cache is SYNTHETIC (random keys and values encoded by the device encoders, no 2M-token
# prefill); the output says so. About 3-5 minutes on an H100 (most of it pinning host memory and filling the cache).
# Variables: OFFLOAD_CTX (2000000), OFFLOAD_CHECK (131072), OFFLOAD_BUDGET (2%), OFFLOAD_STEPS (16), OFFLOAD_KV (nuq2).
set -uo pipefail
stage="${STAGE:-.devrun-model}"
out="${OUT:-/tmp/kvq-offload}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KVQ_CUBIN_CACHE="${KVQ_CUBIN_CACHE:-/tmp/kvq-cubin}"
{
  echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,pcie.link.gen.current,pcie.link.width.current --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) threads, $(grep MemTotal /proc/meminfo | awk '{printf "%.1f GiB", $2/1048576}') RAM, $(grep MemAvailable /proc/meminfo | awk '{printf "%.1f GiB", $2/1048576}') available"
} | tee "$out/offload-2m.log"
timeout 560 "$stage/check/ModelCheck" --offload --offload-ctx "${OFFLOAD_CTX:-2000000}" --offload-check "${OFFLOAD_CHECK:-131072}" \
  --offload-budget "${OFFLOAD_BUDGET:-2%}" --offload-steps "${OFFLOAD_STEPS:-16}" --offload-kv "${OFFLOAD_KV:-nuq2}" 2>&1 | tee -a "$out/offload-2m.log"
rc=${PIPESTATUS[0]}
echo "== exit $rc (log $out/offload-2m.log)" | tee -a "$out/offload-2m.log"
exit "$rc"
