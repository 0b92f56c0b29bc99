#!/usr/bin/env bash
# Runs on the GPU machine from the checkout root (staged by dev/gpu/stage-gpu-tests.sh; no .NET needed): every test of
# Kvq.Cuda.Tests through the NativeAOT runner (dev/gpu/GpuTests), with --no-skip: a GpuFact that skips (no usable
# device) counts as a failure here. One line per test (PASS/FAIL/SKIP, time or reason), then a summary; the log is
# $OUT/gpu-tests.log (default /tmp/kvq-gputests). Arguments go to the runner (--filter TEXT, --list).
# NCCL (NcclFact tests, kvq --gpus): libnccl.so.2 from PyTorch's wheels (site-packages/nvidia/nccl/lib) or the system,
# named by KVQ_NCCL and put on the loader path. When the stage holds kvq (KVQ_WITH_CLI=1 at staging), also runs
# `kvq generate --gpus 1` (NCCL world size 1, the launcher and one rank) against the single-GPU run, and --gpus 2 on a
# one-GPU machine (must fail with a clear line, exit 2): log $OUT/gpus-cli.log.
# Exit code: the runner's (0: all passed), 1 when a CLI check failed.
set -uo pipefail
stage="${STAGE:-.devrun-gputests}"
out="${OUT:-/tmp/kvq-gputests}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KVQ_CUBIN_CACHE="${KVQ_CUBIN_CACHE:-/tmp/kvq-cubin}"
export KVQ_SHARED="$PWD/$stage"   # CudaModelGpuTests reads $KVQ_SHARED/models/books-19m.gguf
if [ -z "${KVQ_NCCL:-}" ]; then
  for d in $(python3 -c 'import site, sys; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null) /usr/lib/x86_64-linux-gnu /usr/local/lib; do
    f="$(find "$d" -name 'libnccl.so.2' 2>/dev/null | head -n 1)"
    if [ -n "$f" ]; then export KVQ_NCCL="$f"; break; fi
  done
fi
[ -n "${KVQ_NCCL:-}" ] && export LD_LIBRARY_PATH="$(dirname "$KVQ_NCCL"):$LD_LIBRARY_PATH"
{
  echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) threads," \
    "$(grep -qw avx512bw /proc/cpuinfo && echo AVX-512 || echo 'no AVX-512: restage with KVQ_ISA=x86-64-v3')"
  echo "nccl: ${KVQ_NCCL:-not found}"
} | tee "$out/gpu-tests.log"
"$stage/GpuTests" --no-skip "$@" 2>&1 | tee -a "$out/gpu-tests.log"
rc=${PIPESTATUS[0]}
echo "== exit $rc" | tee -a "$out/gpu-tests.log"
if [ -x "$stage/kvq" ]; then
  log="$out/gpus-cli.log"
  m="$stage/models/books-19m.gguf"
  p="The old man looked at the sea and said"
  gen() { "$stage/kvq" generate -m "$m" -p "$p" -n 40 --temperature 0 --device cuda --device-weights f32 "$@"; }
  {
    echo "== kvq generate --gpus (sequence parallelism through NCCL), $(date -u '+%H:%M:%S UTC')"
    gen >"$out/one.txt" 2>"$out/one.err"; echo "single GPU: exit $?"; cat "$out/one.txt" "$out/one.err"
    gen --gpus 1 >"$out/g1.txt" 2>"$out/g1.err"; g1=$?; echo "--gpus 1: exit $g1"; cat "$out/g1.txt" "$out/g1.err"
    if [ "$g1" = 0 ] && cmp -s "$out/one.txt" "$out/g1.txt"; then echo "check --gpus 1 text = single GPU text: ok"
    else echo "check --gpus 1 text = single GPU text: FAIL"; fi
    gen --gpus 2 >/dev/null 2>"$out/g2.err"; g2=$?; echo "--gpus 2 on $(nvidia-smi -L | wc -l) GPU(s): exit $g2"; cat "$out/g2.err"
    if [ "$g2" = 2 ] && grep -q "CUDA device" "$out/g2.err"; then echo "check --gpus 2 refused clearly: ok"; else echo "check --gpus 2 refused clearly: FAIL"; fi
  } 2>&1 | tee "$log"
  if grep -q ": FAIL" "$log" && [ "$rc" = 0 ]; then rc=1; fi
fi
exit "$rc"
