#!/usr/bin/env bash
# Line and branch coverage (coverlet.collector, Cobertura) of the test suite, summarised per folder of src/ by
# coverage.py. Runs the whole suite (or the filter given) once under coverlet; slower than a plain run.
#
#   dev/mutation/coverage.sh                                   # whole suite
#   dev/mutation/coverage.sh 'FullyQualifiedName~Kvq.Tests.Cache'
#
# Environment: DEPTH (folder depth under src/Kvq, default 2), CONFIGURATION (default Release), NO_BUILD=1 (test the
# build already there), ARTIFACTS=DIR (build into DIR with --artifacts-path: leaves the worktree's bin/ alone, where a
# Stryker run may be injecting its mutated assembly). Reports go to dev/mutation/out/coverage/ (ignored).
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
out="$root/dev/mutation/out/coverage"
rm -rf "$out"
cd "$root"
filter=()
[[ $# -gt 0 ]] && filter=(--filter "$1")
# Kvq.Core is src/Kvq, kvq is src/Kvq.Cli.
build=()
[[ -n "${NO_BUILD:-}" ]] && build=(--no-build)
[[ -n "${ARTIFACTS:-}" ]] && build+=(--artifacts-path "$ARTIFACTS")
# The fixtures are found by walking up from the test binary to a shared/ folder; from an artifacts folder outside the
# repository's parent that walk misses them, so point at the one beside the repository.
if [[ -n "${ARTIFACTS:-}" && -z "${KVQ_SHARED:-}" && -d "$root/../shared/models" ]]; then
  export KVQ_SHARED=$(cd "$root/../shared" && pwd)
fi
dotnet test tests/Kvq.Tests -c "${CONFIGURATION:-Release}" "${build[@]}" "${filter[@]}" --collect "XPlat Code Coverage" --results-directory "$out" \
  -- DataCollectionRunSettings.DataCollectors.DataCollector.Configuration.Format=cobertura \
     "DataCollectionRunSettings.DataCollectors.DataCollector.Configuration.Include=[Kvq.Core]*,[kvq]*" \
  || echo "(some tests failed: coverage still summarised)" >&2
python3 "$root/dev/mutation/coverage.py" $(find "$out" -name 'coverage.cobertura.xml') --depth "${DEPTH:-2}" | tee "$out/summary.md"
