#!/usr/bin/env bash
# Issue 19: books-19m decode tok/s on the device with the single-token step replayed from a CUDA graph (KVQ_CUDA_GRAPHS=1)
# and launched kernel by kernel (=0, the reference path), f16 and nuq4-1% caches at 512 and 4000 tokens, beside the
# same machine's CPU (all its threads): one table, time-boxed (BUDGET seconds, default 240; a row that would start
# past it is skipped and says so).
# Staged with the model run (dev/gpu/stage-model-run.sh copies this script; KVQ_PROFILE=... stages a books-19m
# KVQuant profile, without one a small one is calibrated here first, ~20-60 s). On the GPU machine (the `run` tool,
# carry [".devrun-model"]), from the checkout root:
#   bash .devrun-model/graph-bench.sh          # table on stdout and in $OUT/graph-bench.log (OUT default /tmp/kvq-graph)
# Knobs: DECODE (tokens per run, default 96: 4000 + 96 = books-19m's trained 4096), REPS (runs after the warm-up, best
# reported, default 5), CTXS ("512 4000"), KVS ("f16 nuq4-1%"), BUDGET.
set -uo pipefail
stage="${STAGE:-.devrun-model}"
out="${OUT:-/tmp/kvq-graph}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KVQ_CUBIN_CACHE=/tmp/kvq-cubin
export KVQ_SHARED="$PWD/$stage"
kvq="$stage/kvq/kvq"
model="$stage/models/books-19m.gguf"
text="$stage/text/moby-dick-60k.txt"
prof="$stage/models/books19m.kvqp"
threads="$(nproc)"
decode="${DECODE:-96}"
reps="${REPS:-5}"
budget="${BUDGET:-240}"
log="$out/graph-bench.log"
: >"$log"
say() { echo "$*" | tee -a "$log"; }

say "graph-bench: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1); host $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads"
say "books-19m, kvq bench --decode $decode -r $reps (best of $reps after a warm-up), decode tok/s"
if [ ! -f "$prof" ] && [[ " ${KVS:-f16 nuq4-1%} " == *nuq* ]]; then
  prof="$out/books19m-small.kvqp"
  say "no staged KVQuant profile: calibrating a small one ($text, 2 x 512 tokens, $threads threads; speed runs only)"
  timeout 100 "$kvq" calibrate -m "$model" --text "$text" --samples 2 --length 512 -t "$threads" --out "$prof" >>"$log" 2>&1 \
    || say "calibration failed or timed out: the nuq rows will fail"
fi

# row LABEL ENV COMMAND...: runs one kvq bench (time-limited), prints its decode tok/s and the device line.
row() {
  local label=$1 env=$2
  shift 2
  if [ "$SECONDS" -ge "$budget" ]; then say "$(printf '%-34s %s' "$label" "skipped (past the ${budget}s budget)")"; return; fi
  local res limit=60
  # The first CUDA row may compile model.cu with NVRTC (cached in KVQ_CUBIN_CACHE afterwards): more time for it.
  if [ -z "${cuda_warm:-}" ] && [[ " $* " == *" --device cuda "* ]]; then limit=200; cuda_warm=1; fi
  res=$(env $env timeout "$limit" "$@" 2>&1)
  echo "$res" >>"$log.raw"
  local tok dev
  tok=$(grep -o 'decode [0-9.]* tok/s' <<<"$res" | head -1 | awk '{print $2}')
  dev=$(grep -m1 ' tok/s, ' <<<"$res" | sed -n 's/.* on \(.*\): prefill .*/\1/p')
  if [ -n "$tok" ]; then say "$(printf '%-34s %10s   %s' "$label" "$tok" "$dev")"
  else say "$(printf '%-34s %s' "$label" "FAILED: $(tail -n 2 <<<"$res" | tr '\n' ' ')")"; fi
}

for ctx in ${CTXS:-512 4000}; do
  for kv in ${KVS:-f16 nuq4-1%}; do
    extra=()
    [ "$kv" != f16 ] && extra=(--profile "$prof" --sink 1)
    args=(bench -m "$model" --ctx "$ctx" --decode "$decode" -r "$reps" --kv "$kv" "${extra[@]}")
    # Off and on alternate, twice, in separate processes (the switch is read at load).
    for round in 1 2; do
      row "cuda $kv ctx $ctx graphs off ($round)" KVQ_CUDA_GRAPHS=0 "$kvq" "${args[@]}" --device cuda
      row "cuda $kv ctx $ctx graphs on  ($round)" KVQ_CUDA_GRAPHS=1 "$kvq" "${args[@]}" --device cuda
    done
  done
  row "cpu f16 ctx $ctx, $threads threads" KVQ_CUDA_GRAPHS=0 "$kvq" bench -m "$model" --ctx "$ctx" --decode "$decode" -r 3 --kv f16 --device cpu -t "$threads"
done
say "done in ${SECONDS}s (raw output: $log.raw)"
