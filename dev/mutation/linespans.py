#!/usr/bin/env python3
"""Turns a --mutate glob with line spans into Stryker.NET's character spans.

Stryker.NET reads `file.cs{start..end}` as a Roslyn TextSpan: character offsets into the file's text (its
FilePattern.Parse builds TextSpan.FromBounds(start, end), and FilePatternMutantFilter keeps a mutant only when a span
wholly contains the mutated node's span), not lines. The scripts here write spans as lines, 1-based and inclusive
(`NuqTokenCodec.cs{153..259}`), which is what a reader can check against the file; this prints the glob with each
span turned into the offsets of the first character of line start and the end of line end, counted as Roslyn counts
them (UTF-16 code units, the byte-order mark not counted, line breaks counted as written).

  linespans.py 'GLOB{153..259}{60..65}' PATH-OF-THE-FILE
"""
import re
import sys

glob, path = sys.argv[1], sys.argv[2]
tail = re.search(r'(\{\d+\.\.\d+\})+$', glob)
if not tail:
    print(glob)
    sys.exit(0)
with open(path, encoding='utf-8-sig', newline='') as f:
    lines = f.read().splitlines(keepends=True)


def units(s):
    return len(s.encode('utf-16-le')) // 2


starts = [0]
for line in lines:
    starts.append(starts[-1] + units(line))
out = glob[:tail.start()]
for a, b in re.findall(r'\{(\d+)\.\.(\d+)\}', tail.group(0)):
    a, b = int(a), int(b)
    if not 1 <= a <= b <= len(lines):
        sys.exit(f'{path}: line span {a}..{b} outside its {len(lines)} lines')
    out += '{%d..%d}' % (starts[a - 1], starts[b])
print(out)
