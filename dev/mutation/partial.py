#!/usr/bin/env python3
"""What a Stryker.NET run still in progress (or stopped) has decided so far, read from its debug log (run.sh with
LOG_FILE=1: out/<part>/logs/log-*.txt). Stryker writes its reports only when every mutant is tested and ignores
SIGINT, so this is the only record of a run that does not finish.

What the log says (Stryker.NET 5.1.0, file log at debug level): which file each mutant id belongs to ("Mutating" then
"Mutant N created ORIGINAL -> REPLACEMENT using MUTATOR"), and for each test run the mutants it held and whether the
run passed ("Test run for ... is success") or some test failed ("... is failed"). Stryker puts mutants with disjoint
tests in one run and re-runs at once, on the same runner, those a run could not decide ("Not all mutants were
tested"). The log names neither the failing tests nor each mutant's status, so a decided mutant is one of:
  passed     decided in a run in which no test failed: survived, or timed out when another mutant of the run hung
             the session (a mutant that cannot survive its tests shows here too: read it as "not killed yet")
  failed     decided in a run in which some test failed: killed, survived or timed out
  pending    in a run that has not reported yet, or waiting to be re-run
So this gives progress and where to look, not a score.
Mutants never run are not listed (untested or not in the mutate set); the NoCoverage total is in the log's summary.

  dev/mutation/partial.py dev/mutation/out/Cache-Codecs-nuq-encoders+ggml+uniform+paging/logs/log-20261207.txt
"""
import collections
import re
import sys

text = open(sys.argv[1], encoding='utf-8', errors='replace').read()
entry = re.compile(r'^\d{4}-\d\d-\d\dT[\d:.]+\+00:00  \[\w+\] ', re.M)
starts = [m.start() for m in entry.finditer(text)] + [len(text)]
mutants = {}
current = None
runs = []      # (ids, result)
testing = []   # ids per "Testing" line, in order
for a, b in zip(starts, starts[1:]):
    line = text[a:b]
    body = line[line.index('] ') + 2:]
    if body.startswith('Mutating "'):
        current = body[len('Mutating "'):body.index('"', len('Mutating "'))]
    elif body.startswith('Mutant ') and ' created ' in body:
        m = re.match(r'Mutant (\d+) created "(.*)" -> "(.*)" using "(.*)"', body, re.S)
        if m:
            mutants[int(m.group(1))] = (current, m.group(2), m.group(3), m.group(4).split('.')[-1])
    elif body.startswith('Test run for "'):
        m = re.match(r'Test run for "(.*)" is "(\w+)"', body, re.S)
        if m:
            runs.append(([int(x.split(':')[0]) for x in m.group(1).split(', ')], m.group(2)))
    elif '": Testing ["' in body:
        ids = body[body.index('["') + 2:body.rindex('"]')]
        testing.append([int(x.split(':')[0]) for x in ids.split(',')])

last = {}
for i, (ids, result) in enumerate(runs):
    for x in ids:
        last[x] = (i, result)
started = collections.Counter(x for ids in testing for x in ids)
reported = collections.Counter(x for ids, _ in runs for x in ids)
status = {}
for x in started:
    if x not in last or started[x] > reported[x]:
        status[x] = 'pending'
    elif last[x][1] == 'success':
        status[x] = 'passed'
    else:
        status[x] = 'failed'


def short(path):
    return (path or '?').split('src/Kvq/')[-1]


def lines_of(path, cache={}):
    """Line of each mutant of the file: its node's first line of text searched from the previous mutant's line
    (Stryker creates a file's mutants in syntax-tree order), so approximate where a node's text repeats."""
    if path not in cache:
        try:
            src = open(path, encoding='utf-8-sig').read().split('\n')
        except OSError:
            src = []
        at, found = 0, {}
        for x in sorted(k for k, v in mutants.items() if v[0] == path):
            head = mutants[x][1].split('\n')[0].strip()
            for n in list(range(at, len(src))) + list(range(0, at)):
                if head and head in src[n]:
                    at = n
                    break
            found[x] = at + 1
        cache[path] = found
    return cache[path]


by_file = collections.defaultdict(collections.Counter)
for x, s in status.items():
    by_file[short(mutants.get(x, (None,))[0])][s] += 1
print(f'{len(runs)} test runs reported; mutants run so far: {len(status)}')
for f in sorted(by_file):
    c = by_file[f]
    print(f'{f}: decided in a passing run {c["passed"]}, in a failing run {c["failed"]}, pending {c["pending"]}')
print('\ndecided in a passing run (survived or timed out):')
for x in sorted((x for x, s in status.items() if s == 'passed'), key=lambda x: (short(mutants[x][0]), x)):
    path, orig, repl, kind = mutants[x]
    o = ' '.join(orig.split())[:70]
    r = ' '.join(repl.split())[:70]
    print(f'  {short(path)}:{lines_of(path).get(x, 0)} #{x} {kind}: {o!r} -> {r!r}')
