#!/usr/bin/env bash
# Runs on the GPU machine from the checkout root (staged by dev/gpu/stage-model-run.sh; no .NET needed): kvq on the
# CPU and on CUDA with the same model and prompt. Greedy generation (CPU vs CUDA with f16 and f32 weights, texts
# compared), perplexity on 2 windows of 512 tokens, and speed at 512/2048/4000 tokens. Every step runs even when
# one fails; the exit code is non-zero if any did. Logs (NAME.out, NAME.err) land in $OUT (default /tmp/kvq-model).
# STEPS="batch sevenb-batch ..." runs only the steps named (the others, and comparisons of steps not run, are skipped).
set -uo pipefail
stage="${STAGE:-.devrun-model}"
out="${OUT:-/tmp/kvq-model}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KVQ_CUBIN_CACHE=/tmp/kvq-cubin
export KVQ_SHARED="$PWD/$stage" # the default model and text are looked up here, never in ../shared
kvq="$stage/kvq/kvq"
model="$stage/models/books-19m.gguf"
text="$stage/text/moby-dick-60k.txt"
prompt="It was a dark and stormy night"
threads="$(nproc)"
failed=()

# step NAME COMMAND...: stdout to $out/NAME.out, stderr to $out/NAME.err, both shown; a failure is recorded.
step() {
  local name=$1
  shift
  if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return 0; fi
  echo "== $name: $(printf "%q " "$@")"
  "$@" >"$out/$name.out" 2>"$out/$name.err"
  local rc=$?
  cat "$out/$name.out"
  tail -n 20 "$out/$name.err" | sed 's/^/   | /'
  if [ $rc -ne 0 ]; then
    echo "== $name FAILED (exit $rc)"
    failed+=("$name")
  fi
}

# same A B: whether two generations wrote the same text.
same() {
  if [ -n "${STEPS:-}" ] && { [[ " $STEPS " != *" $1 "* ]] || [[ " $STEPS " != *" $2 "* ]]; }; then return 0; fi
  if ! [ -s "$out/$1.out" ] || ! [ -s "$out/$2.out" ]; then
    echo "== $1 vs $2: NOT COMPARED (a run failed)"
  elif cmp -s "$out/$1.out" "$out/$2.out"; then
    echo "== $1 vs $2: SAME"
  else
    echo "== $1 vs $2: DIFFERENT"
    diff "$out/$1.out" "$out/$2.out" | sed 's/^/   /'
  fi
}

step gpu nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads," \
  "$(grep -qw avx512bw /proc/cpuinfo && echo AVX-512 || echo 'no AVX-512: restage with KVQ_ISA=x86-64-v3')" | tee "$out/host.txt"
step version "$kvq" --version

gen=(generate -m "$model" -p "$prompt" -n 64 --temperature 0 --kv f16)
step gen-cpu "$kvq" "${gen[@]}" --device cpu -t "$threads"
step gen-cuda-f16 "$kvq" "${gen[@]}" --device cuda --device-weights f16
step gen-cuda-f32 "$kvq" "${gen[@]}" --device cuda --device-weights f32
same gen-cpu gen-cuda-f32
same gen-cpu gen-cuda-f16

ppl=(eval ppl -m "$model" --text "$text" --ctx 512 --windows 2 --kv f16)
step ppl-cpu "$kvq" "${ppl[@]}" --device cpu -t "$threads"
step ppl-cuda-f16 "$kvq" "${ppl[@]}" --device cuda --device-weights f16
step ppl-cuda-f32 "$kvq" "${ppl[@]}" --device cuda --device-weights f32

# KVQuant on the device (encoded there): generate, perplexity and speed with a profile, when one was staged.
prof="$stage/models/books19m.kvqp"
if [ -f "$prof" ]; then
  for kv in nuq4-1% nuq2-1%; do
    step "gen-cpu-$kv" "$kvq" generate -m "$model" -p "$prompt" -n 64 --temperature 0 --kv "$kv" --profile "$prof" --sink 1 --device cpu -t "$threads"
    step "gen-cuda-$kv" "$kvq" generate -m "$model" -p "$prompt" -n 64 --temperature 0 --kv "$kv" --profile "$prof" --sink 1 --device cuda --device-weights f32
    same "gen-cpu-$kv" "gen-cuda-$kv"
  done
  step ppl-cuda-nuq "$kvq" eval ppl -m "$model" --text "$text" --ctx 512 --windows 2 --kv f16,nuq4-1%,nuq3-1%,nuq2-1% --profile "$prof" --sink 1 --device cuda --device-weights f32
  step ppl-cpu-nuq "$kvq" eval ppl -m "$model" --text "$text" --ctx 512 --windows 2 --kv f16,nuq4-1%,nuq3-1%,nuq2-1% --profile "$prof" --sink 1 --device cpu -t "$threads"
  for kv in nuq4-1% nuq2-1%; do
    for ctx in 512 4000; do
      step "bench-cuda-$kv-$ctx" "$kvq" bench -m "$model" --ctx "$ctx" --kv "$kv" --profile "$prof" --sink 1 --device cuda
    done
  done
  step model-check "$stage/check/ModelCheck" --model "$model" --text "$text" --profile "$prof" --contexts 512,2048,4000
else
  step model-check "$stage/check/ModelCheck" --model "$model" --text "$text" --contexts 512,2048,4000
fi

step bench-cpu-512 "$kvq" bench -m "$model" --ctx 512 --kv f16 --device cpu -t "$threads"
for ctx in 512 2048 4000; do
  step "bench-cuda-$ctx" "$kvq" bench -m "$model" --ctx "$ctx" --kv f16 --device cuda
done

# The whole forward pass of a LLaMA-7B-shaped model (random f16 weights made on the device), f16 vs KVQuant caches.
step sevenb "$stage/check/ModelCheck" --sevenb "${SEVENB:-4096,16384}" --decode 32
step sevenb-32k "$stage/check/ModelCheck" --sevenb 32768 --decode 32 --sevenb-kv f16,nuq4-1%,nuq2-1% --no-check
# Issue 19's KVQuant prefill at f16 speed: per context, f16 then each KVQuant cache with the old path (tiles) and the
# decode-once path (f16 chunk), one process (docs/perf.md, "KVQuant prefill at f16 speed"). Not in the default run
# (~5 min): STEPS=sevenb-prefill; PREFILL_MODES=tiles,f16,decoded adds the decoded-chunk variant.
if [ -n "${STEPS:-}" ] && [[ " $STEPS " == *" sevenb-prefill "* ]]; then
  step sevenb-prefill "$stage/check/ModelCheck" --sevenb "${SEVENB_PREFILL:-4096,16384,32768}" --sevenb-kv "${PREFILL_KV:-f16,nuq4-1%,nuq2-1%}" \
    --nuq-prefill "${PREFILL_MODES:-tiles,f16}" --decode 8
fi

# Batched steps (CudaTransformer.ForwardBatch, the serving engine's) against separate Forward calls, books-19m and 7B
# shape; then the serving row: the largest batch of 8k-token sequences in 70 GB and its batched decode tok/s.
if [ -f "$prof" ]; then step batch "$stage/check/ModelCheck" --batch --model "$model" --text "$text" --profile "$prof"
else step batch "$stage/check/ModelCheck" --batch --model "$model" --text "$text"; fi
step sevenb-batch "$stage/check/ModelCheck" --sevenb-batch "${SEVENB_BATCH_CTX:-8192}" --batch-steps 32 --batch-kv "${SEVENB_BATCH_KV:-f16,nuq4-1%,nuq2-1%}"

# The run tool brings back at most 8 files: the logs travel as one archive.
(cd "$out" && tar czf logs.tgz *.out *.err *.txt 2>/dev/null && rm -f *.out *.err)

if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]} (logs in $out)"
  exit 1
fi
echo "all steps passed (logs in $out)"
