#!/usr/bin/env python3
"""Line and branch coverage per folder of src/Kvq from coverlet's Cobertura report(s) (for docs/testing.md).
usage: dev/mutation/coverage.py coverage.cobertura.xml [more.xml ...] [--depth 2]
A line counts once however many classes (lambdas, nested types) it appears in; it is covered when any hit it."""
import collections, re, sys, xml.etree.ElementTree as ET

args = [a for a in sys.argv[1:] if not a.startswith("--")]
depth = int(sys.argv[sys.argv.index("--depth") + 1]) if "--depth" in sys.argv else 2
args = [a for a in args if not a.isdigit()]
lines = {}      # (file, line) -> hit
branches = {}   # (file, line) -> (covered, total)
for path in args:
    root = ET.parse(path).getroot()
    sources = [s.text or "" for s in root.iter("source")]
    for cls in root.iter("class"):
        f = cls.get("filename").replace("\\", "/")
        if not f.startswith("/") and sources:
            f = sources[0].rstrip("/") + "/" + f
        if "/obj/" in f:
            continue  # generated code
        for ln in cls.iter("line"):
            key = (f, int(ln.get("number")))
            lines[key] = lines.get(key, False) or int(ln.get("hits")) > 0
            cc = ln.get("condition-coverage")
            if cc:
                m = re.search(r"\((\d+)/(\d+)\)", cc)
                c, t = int(m.group(1)), int(m.group(2))
                old = branches.get(key, (0, 0))
                branches[key] = (max(old[0], c), max(old[1], t))

def folder(f):
    m = re.search(r"src/(Kvq[^/]*)/(.*)", f)
    if not m:
        return None
    parts = m.group(2).split("/")[:-1]
    return "/".join([m.group(1)] + parts[:depth]) if parts else m.group(1) + " (root)"

agg = collections.defaultdict(lambda: [0, 0, 0, 0])
for (f, n), hit in lines.items():
    k = folder(f)
    if k is None:
        continue
    agg[k][0] += hit
    agg[k][1] += 1
for (f, n), (c, t) in branches.items():
    k = folder(f)
    if k is None:
        continue
    agg[k][2] += c
    agg[k][3] += t
print("| Folder | Lines | Line coverage | Branches | Branch coverage |")
print("|---|---|---|---|---|")
for k in sorted(agg):
    lc, lt, bc, bt = agg[k]
    bcov = f"{100 * bc / bt:.1f}%" if bt else "-"
    print(f"| `{k}` | {lc}/{lt} | {100 * lc / lt:.1f}% | {bc}/{bt} | {bcov} |")
tl = sum(v[1] for v in agg.values()); tc = sum(v[0] for v in agg.values())
tb = sum(v[3] for v in agg.values()); tbc = sum(v[2] for v in agg.values())
print(f"| total | {tc}/{tl} | {100 * tc / max(tl, 1):.1f}% | {tbc}/{tb} | {100 * tbc / max(tb, 1):.1f}% |")
