#!/usr/bin/env bash
# Regenerates every figure in docs/results.md into reports/ (one folder per measure, each with index.html).
# Usage: bash bench/results.sh            (from the repository root; fixtures in ../shared or $KVQ_SHARED)
# Takes ~30-60 minutes on 2 cores. Quick look: QUICK=1 bash bench/results.sh (fewer windows, samples and trials).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${KVQ_SHARED:-../shared}
dotnet build Kvq.slnx -c Release -v quiet
kvq() { dotnet src/Kvq.Cli/bin/Release/net10.0/kvq.dll "$@"; }
MODEL=$SHARED/models/books-19m.gguf
BOOK=$SHARED/text/books/pg2489_moby_dick.txt
W512=${QUICK:+4}; W512=${W512:-20}; W2048=${QUICK:+2}; W2048=${W2048:-4}; SAMPLES=${QUICK:+1}; SAMPLES=${SAMPLES:-4}; TRIALS=${QUICK:+1}; TRIALS=${TRIALS:-2}
KV=f16,q8_0,q4_0,int4,int2,kivi4,kivi2
mkdir -p reports

# KVQuant profiles (calibration text is never Moby Dick).
kvq calibrate -m "$MODEL" --text "$SHARED/text/tinyshakespeare/input.txt" --samples 16 --length 2048 --out reports/books19m.kvqp
kvq calibrate -m "$SHARED/models/stories260K.gguf" --text "$SHARED/text/tinyshakespeare/input.txt" --samples 16 --length 512 --out reports/stories260K.kvqp
NUQ=nuq4-1%,nuq3-1%,nuq3-1%:mixed,nuq2-1%,nuq2-1%:mixed

# Baseline formats beside llama.cpp's own cache types (same windows, same ids).
LLAMA_ATTN_ROT_DISABLE=1 dotnet run --project bench/Kvq.Bench -c Release -- --mode ppl --model "$MODEL" --text "$BOOK" \
  --windows $((W512 * 3)) --kv f16,q8_0,q4_0 --peer-kv f16,q8_0,q4_0 | tee reports/ppl-vs-llamacpp.md

kvq eval ppl     -m "$MODEL" --text "$BOOK" --ctx 512 --windows "$W512" --kv "f32,$KV,$NUQ" --profile reports/books19m.kvqp -t 2 --report reports/ppl
kvq eval ppl     -m "$MODEL" --text "$BOOK" --ctx 2048 --windows "$W2048" --kv "f16,$NUQ" --profile reports/books19m.kvqp -t 2 --report reports/ppl-2048
kvq eval kl      -m "$MODEL" --kv "$KV" --ctx 2048 --windows "$W2048" -t 2 --report reports/kl
kvq eval recall  -m "$MODEL" --kv "$KV,$NUQ" --profile reports/books19m.kvqp --passage 200 --filler 500,1000,1500 --samples "$SAMPLES" -t 2 --report reports/recall
kvq eval passkey -m "$MODEL" --kv "$KV" --lengths 512,1024,2048,3500 --depths 0,0.5,1 --trials "$TRIALS" -t 2 --report reports/passkey
kvq eval needle  -m "$MODEL" --kv f16,q4_0,int2,kivi2 --lengths 512,1024,2048,3500 --depths 0,0.25,0.5,0.75,1 --trials "$TRIALS" -t 2 --report reports/needle
kvq eval memory  -m "$MODEL" --kv "f32,$KV,$NUQ" --profile reports/books19m.kvqp -t 2 --report reports/memory

# Token policies at a 25% budget, alone and with nuq3-1% (docs/policies.md).
POL=(--policy none --policy streaming --policy h2o --policy snapkv --policy tova --policy knorm --policy pyramid:snapkv --policy merge:h2o --policy compose:knorm+h2o)
# A fixed cache of 512 tokens (25% of a 2048 window), then 25% of the tokens seen at every step.
for B in 512 0.25; do
  S=${B/0.25/fraction}
  kvq eval ppl    -m "$MODEL" --text "$BOOK" --ctx 2048 --windows "$W2048" --kv f16,nuq3-1% --profile reports/books19m.kvqp "${POL[@]}" --budget $B -t 2 --report reports/policies-ppl-$S
  kvq eval recall -m "$MODEL" --text "$BOOK" --kv f16,nuq3-1% --profile reports/books19m.kvqp "${POL[@]}" --budget $B --passage 200 --filler 500,1500 --samples "$SAMPLES" -t 2 --report reports/policies-recall-$S
done

# Full quantization: llama.cpp-quantized weights with low-bit caches.
for Q in Q8_0 Q4_K_M; do
  dotnet run --project bench/Kvq.Bench -c Release -- --mode quantize --type $Q --out "reports/books-19m.$Q.gguf"
  kvq eval kl -m "reports/books-19m.$Q.gguf" --reference-model "$MODEL" --kv f32,f16,q4_0,kivi4,kivi2 --ctx 2048 --windows "$W2048" -t 2 --report "reports/kl-$Q"
  kvq eval recall -m "reports/books-19m.$Q.gguf" --kv f16,q4_0,kivi4,kivi2 --passage 200 --filler 500,1000,1500 --samples "$SAMPLES" -t 2 --report "reports/recall-$Q"
done

# stories260K on TinyStories (head dim 8).
kvq eval ppl -m "$SHARED/models/stories260K.gguf" --text "$SHARED/text/tinystories/TinyStories-valid.first1000.txt" --ctx 256 \
  --windows 100 --kv "f32,f16,int8,int4,int4-ch/int4,int2,kivi4,kivi2,$NUQ,nuq3" --profile reports/stories260K.kvqp -t 2 --report reports/stories260K-ppl

# Low-rank keys (docs/results.md "Low-rank keys"): bases + KVQuant on the rank-32/16 key latents, same calibration text.
kvq calibrate -m "$MODEL" --text "$SHARED/text/tinyshakespeare/input.txt" --samples 16 --length 2048 --lowrank --lowrank-nuq 32,16 \
  --out reports/books19m-lr.kvqp
LR=f16,lr48+f16/f16,lr32+f16/f16,lr16+f16/f16,lr48+int4-ch/f16,lr32+int4/f16,lr32h+int4/f16,lr32+int4-ch/f16,lr16+int4/f16
LR=$LR,lr32+nuq4-1%/f16,lr32+nuq3-1%/f16,lr32+nuq2-1%/f16,lr16+nuq4-1%/f16,q8_0/f16,int4/f16,int2/f16,nuq4-1%/f16,nuq3-1%/f16,nuq2-1%/f16
kvq eval ppl    -m "$MODEL" --text "$BOOK" --ctx 2048 --windows 8 --kv "$LR" --profile reports/books19m-lr.kvqp -t 2 --report reports/lowrank-ppl
kvq eval recall -m "$MODEL" --text "$BOOK" --kv "$LR" --profile reports/books19m-lr.kvqp --passage 200 --filler 500,1000,1500 \
  --samples "$SAMPLES" -t 2 --report reports/lowrank-recall

echo "reports written under reports/ (open reports/*/index.html)"
