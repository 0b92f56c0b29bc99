#!/usr/bin/env bash
# Runs on the GPU machine from the checkout root (staged by dev/gpu/stage-gpu-tests.sh; no .NET needed): every test of
# Kvq.Cuda.Tests through the NativeAOT runner (dev/gpu/GpuTests), with --no-skip: a GpuFact that skips (no usable
# device) counts as a failure here. One line per test (PASS/FAIL/SKIP, time or reason), then a summary; the log is
# $OUT/gpu-tests.log (default /tmp/kvq-gputests). Arguments go to the runner (--filter TEXT, --list).
# Exit code: the runner's (0: all passed).
set -uo pipefail
stage="${STAGE:-.devrun-gputests}"
out="${OUT:-/tmp/kvq-gputests}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KVQ_CUBIN_CACHE="${KVQ_CUBIN_CACHE:-/tmp/kvq-cubin}"
export KVQ_SHARED="$PWD/$stage"   # CudaModelGpuTests reads $KVQ_SHARED/models/books-19m.gguf
{
  echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) threads," \
    "$(grep -qw avx512bw /proc/cpuinfo && echo AVX-512 || echo 'no AVX-512: restage with KVQ_ISA=x86-64-v3')"
} | tee "$out/gpu-tests.log"
"$stage/GpuTests" --no-skip "$@" 2>&1 | tee -a "$out/gpu-tests.log"
rc=${PIPESTATUS[0]}
echo "== exit $rc" | tee -a "$out/gpu-tests.log"
exit "$rc"
