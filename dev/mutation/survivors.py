#!/usr/bin/env python3
"""Summarises a Stryker JSON report: score per file and every mutant that was not killed (for docs/testing.md).
usage: dev/mutation/survivors.py dev/mutation/out/Sampling/reports/mutation-report.json"""
import json, sys

report = json.load(open(sys.argv[1]))
killed_like = {"Killed", "Timeout"}
counted = killed_like | {"Survived", "NoCoverage"}
tot_k = tot = 0
for path, f in sorted(report["files"].items()):
    ms = [m for m in f["mutants"] if m["status"] in counted]
    if not ms:
        continue
    k = sum(m["status"] in killed_like for m in ms)
    tot_k += k
    tot += len(ms)
    short = path.split("src/Kvq/")[-1]
    print(f"{short}: {k}/{len(ms)} = {100 * k / len(ms):.1f}%")
    lines = f["source"].split("\n")
    for m in sorted(ms, key=lambda m: m["location"]["start"]["line"]):
        if m["status"] in killed_like:
            continue
        ln = m["location"]["start"]["line"]
        print(f"  {m['status']:10} line {ln:4} {m['mutatorName']}: {m.get('replacement', '').strip()[:90]!r}")
        print(f"             {lines[ln - 1].strip()[:110]}")
print(f"total: {tot_k}/{tot} = {100 * tot_k / max(tot, 1):.2f}%")
