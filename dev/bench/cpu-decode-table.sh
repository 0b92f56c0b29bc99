#!/usr/bin/env bash
# Issue 23's "Must show" table: CPU decode and prefill as users measure them, beside llama.cpp (LLamaSharp) in the same run.
#   A. f16 cache at 512 and 4,000 tokens, 1 and 2 threads: `kvq bench` as users run it (fresh process, 5 repetitions, the
#      spread printed), and bench/Kvq.Bench with llama.cpp f16 and q4_0 and Kvq f16 in one process (5 repetitions each,
#      interleaved, spreads printed); prefill comes with every row.
#   B. nuq4-1% and nuq3-1% vs Kvq's f16 and llama.cpp's f16/q4_0 at 4,000 (both tools) and 16,000 tokens (bench/Kvq.Bench
#      only: `kvq bench` refuses contexts past the model's trained 4,096), 2 threads.
#   C. summary.md: one table from the JSON lines (best of 5 and min..max for every figure).
# Usage: dev/bench/cpu-decode-table.sh PROFILE.kvqp [OUT_DIR] [MODEL]   (a books-19m profile from `kvq calibrate`;
#        run on a quiet machine: the load average is recorded before and after)
# Environment (for a smoke run): CTXS="512 4000" (A), MID=4000 and LONG=16000 (B), REPS=5.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:?a books-19m KVQuant profile (kvq calibrate --text ../shared/text/tinyshakespeare/input.txt --out P)}
out=${2:-cpu-decode-table}
model=${3:-../shared/models/books-19m.gguf}
reps=${REPS:-5}
ctxs=${CTXS:-512 4000}
mid=${MID:-4000}
long=${LONG:-16000}
mkdir -p "$out"
dotnet build -c Release src/Kvq.Cli >/dev/null
dotnet build -c Release bench/Kvq.Bench >/dev/null
kvq=src/Kvq.Cli/bin/Release/net10.0/kvq
peer="dotnet bench/Kvq.Bench/bin/Release/net10.0/Kvq.Bench.dll"
: > "$out/cli.jsonl"
: > "$out/side-by-side.jsonl"
echo "start load: $(cat /proc/loadavg)" | tee "$out/load.txt"
lscpu | grep -E "Model name|^CPU\(s\)" | tee -a "$out/load.txt"

# f16 rows run without the profile (no sink token, as llama.cpp); with KVQuant rows in the same sweep every Kvq row
# carries the profile's sink (1 token), f16 included.
side_by_side() { # ctx threads decode kv-list
  local prof=()
  if [[ "$4" == *nuq* ]]; then prof=(--profile "$profile"); fi
  $peer --model "$model" --ctx "$1" --threads "$2" --decode "$3" --kv "$4" --peer-kv f16,q4_0 "${prof[@]}" \
    --repetitions $reps | tee "$out/side-$1-$2t-$4.txt" | grep '^{' >> "$out/side-by-side.jsonl"
  grep '^|' "$out/side-$1-$2t-$4.txt" || true
}
cli() { # ctx threads decode kv [profile for the sink of f16 beside nuq]
  local prof=()
  if [[ "$4" == *nuq* || -n "${5:-}" ]]; then prof=(--profile "$profile"); fi
  "$kvq" bench -m "$model" --ctx "$1" -t "$2" --decode "$3" --kv "$4" "${prof[@]}" -r $reps --json | tee -a "$out/cli.jsonl"
}

# A. f16 at 512 and 4000, 1 and 2 threads (64 decode tokens, as in the issue's measurement).
for threads in 1 2; do
  for ctx in $ctxs; do
    side_by_side $ctx $threads 64 f16
    cli $ctx $threads 64 f16
  done
done
# B. KVQuant at 4000 (both tools) and 16000 (bench/Kvq.Bench), 2 threads, 32 decode tokens.
side_by_side $mid 2 32 f16,nuq4-1%,nuq3-1%
for kv in f16 nuq4-1% nuq3-1%; do cli $mid 2 32 $kv with-sink; done
side_by_side $long 2 32 f16,nuq4-1%,nuq3-1%
echo "end load: $(cat /proc/loadavg)" | tee -a "$out/load.txt"

# C. Summary: best of 5 (min..max) per row; ratios against llama.cpp f16 of the same tool run, context and threads.
python3 - "$out" <<'PY' | tee "$out/summary.md"
import json, sys, collections
out = sys.argv[1]
def rows(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.startswith('{')]
def spread(r, key):
    s = r.get(key)
    return f"{s['min']:.0f}..{s['max']:.0f}" if s else ""
side = rows(f"{out}/side-by-side.jsonl")
# Kvq.Bench prints every repetition block's best; keep the best per (engine, ctx, kv, threads).
best = {}
for r in side:
    k = (r['engine'], r['ctx'], r['kv'], r['threads'], r['decode_tokens'])
    if k not in best or r['decode_tok_s'] + r['prefill_tok_s'] > best[k]['decode_tok_s'] + best[k]['prefill_tok_s']:
        best[k] = r
cli = rows(f"{out}/cli.jsonl")
print("| tool | engine | ctx | threads | decode tokens | kv | decode tok/s (best of 5) | decode min..max | vs llama.cpp f16 | vs llama.cpp q4_0 | vs Kvq f16 | prefill tok/s | prefill vs llama.cpp f16 |")
print("|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|")
def line(tool, r):
    lf = best.get(('llama.cpp', r['ctx'], 'f16', r['threads'], r['decode_tokens']))
    lq = best.get(('llama.cpp', r['ctx'], 'q4_0', r['threads'], r['decode_tokens']))
    kf = [x for x in (cli if tool == 'kvq bench' else best.values())
          if x['engine'] == 'kvq' and x['ctx'] == r['ctx'] and x['kv'] == 'f16' and x['threads'] == r['threads']
          and x['decode_tokens'] == r['decode_tokens']]
    kf = max(kf, key=lambda x: x['decode_tok_s']) if kf else None
    ratio = lambda a, b: f"{a / b:.2f}x" if b else ""
    print(f"| {tool} | {r['engine']} | {r['ctx']} | {r['threads']} | {r['decode_tokens']} | {r['kv']} | {r['decode_tok_s']:.1f} | {spread(r, 'decode_spread')} | "
          f"{ratio(r['decode_tok_s'], lf['decode_tok_s']) if lf else ''} | {ratio(r['decode_tok_s'], lq['decode_tok_s']) if lq else ''} | "
          f"{ratio(r['decode_tok_s'], kf['decode_tok_s']) if kf and r['engine'] == 'kvq' else ''} | {r['prefill_tok_s']:.0f} | "
          f"{ratio(r['prefill_tok_s'], lf['prefill_tok_s']) if lf else ''} |")
for r in sorted(best.values(), key=lambda r: (r['ctx'], r['threads'], r['engine'] != 'llama.cpp', r['kv'])):
    line('Kvq.Bench', r)
for r in cli:
    line('kvq bench', r)
PY
