#!/usr/bin/env bash
# The serving tables of docs/perf.md ("Serving"), one run each, books-19m, 2 threads:
#   1. 32 requests x (2000-token prompt, 200 output) at a 64 MiB KV budget: Kvq f16 and nuq3-1% beside llama.cpp's batched
#      decoding at the same budget (bench/Kvq.Bench --mode serve).
#   2. Batched decode: 1 vs 16 concurrent sequences (kvq bench serve) and the step itself (bench/Kvq.Micro --quick-batch).
#   3. 100 requests sharing a 1500-token prefix, prefix cache on vs off (kvq bench serve --shared-prefix).
#   4. Throughput and time to first token at 1/8/32 clients, f16 vs nuq3-1% (docs/serving.md).
# Usage: dev/bench/serve-tables.sh PROFILE.kvqp [OUT_DIR]   (a books-19m profile from `kvq calibrate`; quiet machine)
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:?a books-19m KVQuant profile (kvq calibrate --text ../shared/text/tinyshakespeare/input.txt --out P)}
out=${2:-serve-tables}
mkdir -p "$out"
dotnet build -c Release Kvq.slnx >/dev/null
kvq=src/Kvq.Cli/bin/Release/net10.0/kvq
echo "load: $(cat /proc/loadavg)" | tee "$out/load.txt"
dotnet bench/Kvq.Bench/bin/Release/net10.0/Kvq.Bench.dll --mode serve --kv f16,nuq3-1% --profile "$profile" --peer-kv f16 \
  --kv-budget 64MiB --requests 32 --prompt-tokens 2000 --output-tokens 200 --concurrency 32 --threads 2 | tee "$out/1-budget.txt"
"$kvq" bench serve --kv f16 --kv-budget 256MiB --requests 32 --prompt-tokens 256 --output-tokens 128 -C 1,16 -t 2 \
  --report "$out/2-batch" | tee "$out/2-batch.txt"
dotnet bench/Kvq.Micro/bin/Release/net10.0/Kvq.Micro.dll --quick-batch ../shared/models/books-19m.gguf 2 512 1,4,16,32 f16 | tee "$out/2-step.txt"
for p in "" "--no-prefix-cache"; do
  "$kvq" bench serve --kv f16 --kv-budget 64MiB --requests 100 --prompt-tokens 1600 --shared-prefix 0.9375 --output-tokens 16 -C 4 -t 2 $p \
    | tee -a "$out/3-prefix.txt"
done
"$kvq" bench serve --kv f16,nuq3-1% --profile "$profile" --kv-budget 64MiB --requests 32 --prompt-tokens 1000 --output-tokens 100 \
  -C 1,8,32 -t 2 --report "$out/4-clients" | tee "$out/4-clients.txt"
echo "load: $(cat /proc/loadavg)" | tee -a "$out/load.txt"
