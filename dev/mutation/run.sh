#!/usr/bin/env bash
# Mutation testing with Stryker.NET (the local tool in .config/dotnet-tools.json) over one folder of src/Kvq, against
# the tests that check that folder's decisions. Slow (it runs the filtered tests once per mutant): not part of the
# README's test command. Results (html, json, markdown) go to dev/mutation/out/<folder>/ (ignored by git); the scores
# and survivors are summarised in docs/testing.md.
#
#   dev/mutation/run.sh src/Kvq/Sampling
#   dev/mutation/run.sh src/Kvq/Cache/Policies
#   dev/mutation/run.sh src/Kvq/Cache/Paging 'FullyQualifiedName~Kvq.Tests.Cache.Paging'   # any folder, own filter
#
# Environment: CONCURRENCY (test runners in parallel, default 1), LEVEL (Stryker mutation level, default Standard).
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
folder=${1:?usage: dev/mutation/run.sh src/Kvq/FOLDER [TEST-FILTER]}
folder=${folder%/}
rel=${folder#src/Kvq/}
[[ -d "$root/src/Kvq/$rel" ]] || { echo "no folder src/Kvq/$rel" >&2; exit 2; }

# The tests that decide on each folder (the model-driven matrices are left out: minutes per mutant, and they check
# invariants, not decisions; a surviving mutant they would kill is listed as such in docs/testing.md).
case "$rel" in
  Sampling)
    filter='FullyQualifiedName~Kvq.Tests.Sampling|FullyQualifiedName~Kvq.Tests.Generation.GeneratorTests' ;;
  Cache/Policies)
    filter='FullyQualifiedName~Kvq.Tests.Cache.Policies&FullyQualifiedName!~PolicyMatrixTests&FullyQualifiedName!~PolicyAllocationTests' ;;
  *)
    filter="FullyQualifiedName~Kvq.Tests.${rel//\//.}" ;;
esac
filter=${2:-$filter}
out="$root/dev/mutation/out/${rel//\//-}"
rm -rf "$out"

cd "$root/tests/Kvq.Tests"
dotnet tool restore >/dev/null
dotnet stryker \
  --project Kvq.csproj \
  --mutate "**/src/Kvq/$rel/**/*.cs" \
  --test-case-filter "$filter" \
  --concurrency "${CONCURRENCY:-1}" \
  --mutation-level "${LEVEL:-Standard}" \
  --configuration Release \
  --reporter Progress --reporter ClearText --reporter Json --reporter Html --reporter Markdown \
  --output "$out" \
  --skip-version-check
echo "reports: $out/reports"
