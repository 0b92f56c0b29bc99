#!/usr/bin/env bash
# Mutation testing with Stryker.NET (the local tool in .config/dotnet-tools.json) over one folder of src/Kvq, against
# the tests that check that folder's decisions. Slow (it runs the filtered tests once per mutant): not part of the
# README's test command. Results (html, json, markdown) go to dev/mutation/out/<folder>/ (ignored by git); the scores
# and survivors are summarised in docs/testing.md.
#
#   dev/mutation/run.sh src/Kvq/Sampling
#   dev/mutation/run.sh src/Kvq/Cache/Policies
#   dev/mutation/run.sh src/Kvq/Cache/Paging 'FullyQualifiedName~Kvq.Tests.Cache.Paging'   # any folder, own filter
#   FILES="Q8_0Codec.cs Q4_0Codec.cs" PART=ggml dev/mutation/run.sh src/Kvq/Cache/Codecs       # some files of a folder
#
# Environment: TEST_PROJECT (the test project Stryker runs, relative to the root: tests/Kvq.MutationTests for the
# codecs and the paging, tests/Kvq.Tests otherwise), CONCURRENCY (test runners in parallel, default 1), LEVEL (Stryker mutation level, default Standard),
# FILES (paths relative to the folder to mutate, space-separated globs; default every .cs file of the folder), PART
# (a name for that selection: reports go to out/<folder>-<part>/), EXTRA (more globs, relative to src/Kvq, mutated
# with the folder's files; a glob may end in {start..end} line spans). Stryker compiles the mutants of the whole project
# whatever is mutated (about 15 minutes on 2 busy cores before the first mutant runs), so a part saves test time only.
# CONFIG: a Stryker config file for what the command line cannot say (dev/mutation/codecs.sh passes
# dev/mutation/codecs-config.json: methods whose mutants are not generated, i.e. exception constructors and argument
# guards, whose only effect is the message, and logging; an extra timeout for a loaded machine).
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
  Cache/Codecs)
    # The model-driven CodecsInPagedSequenceTests are left out (seconds per mutant; the codecs' own tests decide).
    filter='FullyQualifiedName~Kvq.Tests.Cache.Codecs&FullyQualifiedName!~CodecsInPagedSequenceTests' ;;
  Cache/Policies)
    filter='FullyQualifiedName~Kvq.Tests.Cache.Policies&FullyQualifiedName!~PolicyMatrixTests&FullyQualifiedName!~PolicyAllocationTests' ;;
  *)
    filter="FullyQualifiedName~Kvq.Tests.${rel//\//.}" ;;
esac
filter=${2:-$filter}
out="$root/dev/mutation/out/${rel//\//-}${PART:+-$PART}"
mutate=()
if [[ -n "${FILES:-}" ]]; then
  set -f; for f in $FILES; do mutate+=(--mutate "**/src/Kvq/$rel/$f"); done; set +f
else
  mutate=(--mutate "**/src/Kvq/$rel/**/*.cs")
fi
if [[ -n "${EXTRA:-}" ]]; then
  set -f; for f in $EXTRA; do mutate+=(--mutate "**/src/Kvq/$f"); done; set +f
fi
rm -rf "$out"

# The test host: tests/Kvq.MutationTests (only the codec and paging tests and their helpers, linked from Kvq.Tests)
# for the folders it holds tests for, so that each mutant's test run loads a few hundred tests, not Kvq.Tests' 2,500.
case "$rel" in
  Cache/Codecs|Cache/Paging) tests=${TEST_PROJECT:-tests/Kvq.MutationTests} ;;
  *) tests=${TEST_PROJECT:-tests/Kvq.Tests} ;;
esac
cd "$root/$tests"
dotnet tool restore >/dev/null
dotnet stryker \
  ${CONFIG:+--config-file "$CONFIG"} \
  --project Kvq.csproj \
  "${mutate[@]}" \
  --test-case-filter "$filter" \
  --concurrency "${CONCURRENCY:-1}" \
  --mutation-level "${LEVEL:-Standard}" \
  --configuration Release \
  --reporter Progress --reporter ClearText --reporter Json --reporter Html --reporter Markdown \
  --output "$out" \
  --skip-version-check
echo "reports: $out/reports"
