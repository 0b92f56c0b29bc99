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
# with the folder's files; a glob may end in {start..end} line spans, 1-based and inclusive, turned into Stryker's
# character spans by linespans.py). Stryker compiles the mutants of the whole project
# whatever is mutated (about 15 minutes on 2 busy cores before the first mutant runs), so a part saves test time only.
# LOG_FILE=1: Stryker's debug log to out/.../logs/ (which file each mutant is in, which mutants each test run held and
# whether a test failed; not each mutant's status): the only record of a run stopped before its end, since the reports
# are written only when every mutant is tested. dev/mutation/partial.py reads it.
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
# A glob with line spans ({start..end}, 1-based, inclusive) names one file; Stryker's spans are character offsets,
# so linespans.py turns the lines into them (a span of lines given to Stryker as is matches no mutant).
glob() { # glob, relative to src/Kvq
  if [[ "$1" =~ \{[0-9]+\.\.[0-9]+\}$ ]]; then
    local file=${1%%\{*}
    [[ -f "$root/src/Kvq/$file" ]] || { echo "line spans need one file, not '$file'" >&2; exit 2; }
    python3 "$root/dev/mutation/linespans.py" "**/src/Kvq/$1" "$root/src/Kvq/$file"
  else
    echo "**/src/Kvq/$1"
  fi
}
mutate=()
if [[ -n "${FILES:-}" ]]; then
  set -f; for f in $FILES; do mutate+=(--mutate "$(glob "$rel/$f")"); done; set +f
else
  mutate=(--mutate "**/src/Kvq/$rel/**/*.cs")
fi
if [[ -n "${EXTRA:-}" ]]; then
  set -f; for f in $EXTRA; do mutate+=(--mutate "$(glob "$f")"); done; set +f
fi
echo "mutate: ${mutate[*]}"
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
  --skip-version-check \
  ${LOG_FILE:+--log-to-file}
echo "reports: $out/reports"
