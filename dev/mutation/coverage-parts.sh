#!/usr/bin/env bash
# Whole-suite line and branch coverage in parts: dev/mutation/coverage.sh's collector run, once per group of test
# namespaces, each group's Cobertura report kept, and the union of all the reports there so far summarised per folder
# of src/ (coverage.py: a line is covered when any part's run hit it). The suite under coverlet in one run does not
# finish in a session on the shared 2-core machine, and coverlet writes its report only when the run ends; in parts,
# every finished part's report counts, and the time each part took is printed.
#
#   ARTIFACTS=/tmp/cov-art dev/mutation/coverage-parts.sh                 # every part not yet done, then the summary
#   ARTIFACTS=/tmp/cov-art dev/mutation/coverage-parts.sh codecs cache    # some parts
#   dev/mutation/coverage-parts.sh --summary                              # only the summary of the parts done
#
# NuqFusedKernelTests (the AVX-512 fused attention kernels against decode + dense: about 740 s of test time on its own)
# is its own last part, `fused`, so that the rest does not wait for it.
# One run at a time: coverlet instruments Kvq.Core.dll and kvq.dll in the test output folder in place and puts them
# back at the end, so two runs over one build corrupt each other (BadImageFormatException, an aborted run): a lock
# file in the reports folder refuses a second run.
# Environment: as coverage.sh (DEPTH, CONFIGURATION, NO_BUILD=1, ARTIFACTS=DIR, KVQ_SHARED). Reports go to
# dev/mutation/out/coverage-parts/<part>/ (ignored); a part whose report is there is skipped unless REDO=1.
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
out="$root/dev/mutation/out/coverage-parts"
mkdir -p "$out"
cd "$root"
if [[ "${1:-}" != --summary ]]; then
  exec 9>"$out/.lock"
  flock -n 9 || { echo "another coverage-parts run is going on (lock $out/.lock)" >&2; exit 2; }
fi
ns='Kvq.Tests'
t="FullyQualifiedName~$ns"
declare -A parts=(
  [codecs]="$t.Cache.Codecs&FullyQualifiedName!~NuqFusedKernelTests"
  [cache]="$t.Cache&FullyQualifiedName!~$ns.Cache.Codecs"
  [sampling]="$t.Sampling|$t.Generation|$t.Chat"
  [tensors]="$t.Tensors"
  [model]="$t.Model"
  [formats]="$t.Formats|$t.Tokenizers"
  [calibration]="$t.Calibration"
  [eval]="$t.Eval"
  [serving]="$t.Serving"
  [cli]="$t.Cli|$t.Docs|$t.Architecture"
  [fused]="FullyQualifiedName~NuqFusedKernelTests"
)
order=(codecs cache sampling tensors model formats calibration eval serving cli rest fused)
# rest: whatever no part names (none today; keeps a new top-level test folder from being missed).
rest=
for n in Cache Sampling Generation Chat Tensors Model Formats Tokenizers Calibration Eval Serving Cli Docs Architecture; do
  rest+="${rest:+&}FullyQualifiedName!~$ns.$n."
done
parts[rest]=$rest
summary() {
  local files=()
  mapfile -t files < <(find "$out" -name 'coverage.cobertura.xml' | sort)
  [[ ${#files[@]} -gt 0 ]] || { echo "no part finished yet" >&2; return 0; }
  echo "parts: $(for f in "${files[@]}"; do basename "$(dirname "$(dirname "$(dirname "$f")")")"; done | sort -u | tr '\n' ' ')"
  python3 "$root/dev/mutation/coverage.py" "${files[@]}" --depth "${DEPTH:-1}" | tee "$out/summary.md"
}
if [[ "${1:-}" == --summary ]]; then summary; exit 0; fi
selected=("$@")
[[ ${#selected[@]} -gt 0 ]] || selected=("${order[@]}")
build=()
[[ -n "${NO_BUILD:-}" ]] && build=(--no-build)
[[ -n "${ARTIFACTS:-}" ]] && build+=(--artifacts-path "$ARTIFACTS")
if [[ -n "${ARTIFACTS:-}" && -z "${KVQ_SHARED:-}" && -d "$root/../shared/models" ]]; then
  export KVQ_SHARED=$(cd "$root/../shared" && pwd)
fi
for p in "${selected[@]}"; do
  [[ -n "${parts[$p]:-}" ]] || { echo "unknown part '$p' (${order[*]})" >&2; exit 2; }
  dir="$out/$p"
  if [[ -z "${REDO:-}" ]] && find "$dir" -name 'coverage.cobertura.xml' 2>/dev/null | grep -q .; then
    echo "== $p: done before, skipped"; continue
  fi
  rm -rf "$dir"; mkdir -p "$dir"
  start=$(date +%s)
  echo "== $p: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), filter ${parts[$p]}"
  dotnet test tests/Kvq.Tests -c "${CONFIGURATION:-Release}" "${build[@]}" --filter "${parts[$p]}" \
    --collect "XPlat Code Coverage" --results-directory "$dir/results" --logger "trx;LogFileName=$p.trx" \
    -- DataCollectionRunSettings.DataCollectors.DataCollector.Configuration.Format=cobertura \
       "DataCollectionRunSettings.DataCollectors.DataCollector.Configuration.Include=[Kvq.Core]*,[kvq]*" \
    > "$dir/test.log" 2>&1 || echo "   (some tests failed: coverage still counted; see $dir/test.log)"
  build=(--no-build ${ARTIFACTS:+--artifacts-path "$ARTIFACTS"})
  echo "   $p took $(( $(date +%s) - start )) s, $(grep -Eo '(Passed|Failed|Skipped|Total): *[0-9]+' "$dir/test.log" | tr '\n' ' ')"
done
summary
