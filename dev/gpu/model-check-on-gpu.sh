#!/usr/bin/env bash
# Builds dev/gpu/ModelCheck (NativeAOT) here and stages it with books-19m and a text into <main checkout>/.devrun-model.
# Then, on the GPU machine (the `run` tool, carry [".devrun-model"]), from the checkout root:
#   bash .devrun-model/model-check.sh
# CPU vs GPU logits and greedy text on books-19m, the CPU model over the device cache, GPU tok/s at several lengths.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
stage="${1:-$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir | xargs dirname)/.devrun-model}"
shared="${KVQ_SHARED:-$repo/../shared}"
mkdir -p "$stage/check" "$stage/models" "$stage/text"
dotnet publish "$here/ModelCheck" -r linux-x64 -c Release -p:PublishAot=true -o "$stage/check" >/dev/null
rm -f "$stage"/check/*.dbg "$stage"/check/*.pdb
cp "$shared/models/books-19m.gguf" "$shared/models/books-19m.tokenizer.model" "$stage/models/"
profile="${KVQ_PROFILE:-$repo/reports/books19m.kvqp}"
if [ -f "$profile" ]; then cp "$profile" "$stage/models/books19m.kvqp"; else echo "no KVQuant profile at $profile (kvq calibrate, see bench/results.sh): KVQuant checks skipped"; rm -f "$stage/models/books19m.kvqp"; fi
head -c 60000 "$shared/text/books/pg2489_moby_dick.txt" > "$stage/text/moby.txt"
cat > "$stage/model-check.sh" <<'EOS'
#!/usr/bin/env bash
set -uo pipefail
out="${OUT:-/tmp/kvq-model}"; mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" KVQ_CUBIN_CACHE=/tmp/kvq-cubin
d="$(dirname "$0")"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt"
prof=""; [ -f "$d/models/books19m.kvqp" ] && prof="--profile $d/models/books19m.kvqp"
"$d/check/ModelCheck" --model "$d/models/books-19m.gguf" --text "$d/text/moby.txt" $prof ${CHECK_ARGS:-} 2>&1 | tee "$out/model-check.log"
exit ${PIPESTATUS[0]}
EOS
echo "staged in $stage ($(du -sh "$stage" | cut -f1)); on the device: bash .devrun-model/model-check.sh"
