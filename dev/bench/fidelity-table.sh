#!/usr/bin/env bash
# The fidelity table of issue 17 (docs/results.md, "Fidelity: KVQuant beside the rivals"): per KV format, real bits per
# element, perplexity delta vs f16 at 512 and 2048 tokens, KL(f16 || format) mean and 99.9th percentile, top-1
# agreement with f16, and copy recall (second-copy perplexity vs f16's), on Moby Dick and on wikitext-2 (books-19m,
# 20 non-overlapping windows, every position scored; KVQuant profile calibrated on tinyshakespeare).
#
# One `kvq eval kl` per (text, context) gives ppl, the f16 reference's ppl, KL and top-1 on the same windows (the
# reference runs once per window); `kvq eval recall` per text gives copy recall. Raw JSON lines stay in OUT_DIR.
#
# Usage: dev/bench/fidelity-table.sh [PROFILE.kvqp] [OUT_DIR]
#   PROFILE  books-19m KVQuant profile (default: OUT_DIR/books19m.kvqp, calibrated here on tinyshakespeare if missing;
#            the nuq formats need it, the others ignore it)
#   env FORMATS  comma list (default below); CTXS (default "512 2048"); WINDOWS (default 20; WINDOWS_<ctx>, e.g.
#       WINDOWS_2048=5, overrides it for one context); TEXTS (default both);
#       RECALL=0 skips copy recall; THREADS (default 2); KVQ (path of a built kvq; default: build src/Kvq.Cli)
# Example (rivals only, 512 only): FORMATS=f16,q4_0,q4_0:rot,tq3 CTXS=512 dev/bench/fidelity-table.sh P.kvqp out
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${2:-reports/fidelity}
profile=${1:-$out/books19m.kvqp}
formats=${FORMATS:-f16,q8_0,q4_0,q4_0:rot,int4:rot,tq3,tq3:qjl,tq2.5,nuq4-1%,nuq4-1%:mixed,nuq3-1%,nuq3-1%:mixed,nuq3-1%:rot,nuq2-1%,nuq2-1%:mixed}
ctxs=${CTXS:-512 2048}
windows=${WINDOWS:-20}
threads=${THREADS:-2}
shared=${KVQ_SHARED:-../shared}
texts=${TEXTS:-"moby=$shared/text/books/pg2489_moby_dick.txt wikitext2=$shared/text/wikitext-2/wiki.test.raw"}
mkdir -p "$out"
if [[ -z "${KVQ:-}" ]]; then
  dotnet build src/Kvq.Cli -c Release >/dev/null
  KVQ=src/Kvq.Cli/bin/Release/net10.0/kvq
fi
model=$shared/models/books-19m.gguf
if [[ ! -f "$profile" ]]; then
  "$KVQ" calibrate --model "$model" --text "$shared/text/tinyshakespeare/input.txt" --out "$profile" -t "$threads"
fi
{ echo "started $(date -u +%FT%TZ)"; echo "load: $(cat /proc/loadavg)"; nproc; grep -m1 'model name' /proc/cpuinfo || true; } > "$out/machine.txt"
# f16 is the reference of every KL run; keep it as a row too (KL 0, the recall baseline).
[[ ",$formats," == *",f16,"* ]] || formats="f16,$formats"
for entry in $texts; do
  name=${entry%%=*}; text=${entry#*=}
  for ctx in $ctxs; do
    f="$out/kl-$name-$ctx.jsonl"
    [[ -s "$f" ]] && { echo "have $f"; continue; }
    w_var="WINDOWS_$ctx"
    "$KVQ" eval kl --model "$model" --text "$text" --ctx "$ctx" --windows "${!w_var:-$windows}" --kv "$formats" --reference f16 \
      --profile "$profile" -t "$threads" --json > "$f.tmp"
    mv "$f.tmp" "$f"
  done
  if [[ "${RECALL:-1}" != 0 ]]; then
    f="$out/recall-$name.jsonl"
    if [[ ! -s "$f" ]]; then
      "$KVQ" eval recall --model "$model" --text "$text" --kv "$formats" --profile "$profile" -t "$threads" --json > "$f.tmp"
      mv "$f.tmp" "$f"
    fi
  fi
done
echo "finished $(date -u +%FT%TZ), load: $(cat /proc/loadavg)" >> "$out/machine.txt"
python3 - "$out" "$formats" "$windows" $texts <<'EOF'
import json, sys, os, glob
out, formats, windows = sys.argv[1], sys.argv[2].split(','), sys.argv[3]
texts = [t.split('=', 1)[0] for t in sys.argv[4:]]
def rows(path):
    if not os.path.exists(path): return {}
    return {r['kv']: r for r in (json.loads(l) for l in open(path) if l.startswith('{'))}
ctxs = sorted({int(p.rsplit('-', 1)[1].split('.')[0]) for p in glob.glob(f'{out}/kl-*.jsonl')})
lines = []
for name in texts:
    kl = {c: rows(f'{out}/kl-{name}-{c}.jsonl') for c in ctxs}
    rec = {}
    for r in (json.loads(l) for l in open(f'{out}/recall-{name}.jsonl') if l.startswith('{')) if os.path.exists(f'{out}/recall-{name}.jsonl') else []:
        rec.setdefault(r['kv'], []).append(r['second_copy_ppl'])
    head = ['kv', 'real bits']
    for c in ctxs: head += [f'ppl Δ {c}']
    for c in ctxs: head += [f'KL mean {c}', f'KL 99.9% {c}', f'top-1 {c}']
    head += ['copy recall vs f16']
    wins = ', '.join(f"{c}: {next(iter(kl[c].values()))['windows']} windows" for c in ctxs if kl[c])
    lines += [f'### {name}, books-19m ({wins})', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' + '---:|' * (len(head) - 1)]
    for f in formats:
        any_row = next((kl[c][f] for c in ctxs if f in kl[c]), None)
        if any_row is None: continue
        cells = [f, f"{any_row['bits_per_element']:.2f}"]
        for c in ctxs:
            r = kl[c].get(f)
            cells.append(f"{(r['ppl'] / r['reference_ppl'] - 1) * 100:+.2f}%" if r else '')
        for c in ctxs:
            r = kl[c].get(f)
            cells += [f"{r['mean_kl']:.4f}", f"{r['p999_kl']:.3f}", f"{r['top1_agreement'] * 100:.2f}%"] if r else ['', '', '']
        if f in rec and 'f16' in rec:
            ratios = [a / b for a, b in zip(rec[f], rec['f16'])]
            cells.append(f"{sum(ratios) / len(ratios):.2f}x")
        else: cells.append('')
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
open(f'{out}/table.md', 'w').write('\n'.join(lines))
print('\n'.join(lines))
EOF
