# Estimate (pure Python, no GPU, ~2.5 minutes) of what kernel v15's f16 value levels cost in accuracy: the relative L2
# error of a GQA decode output (4 query heads, 4099 tokens, head dim 128) when the 16 value levels are rounded to f16
# (v15: the mma A operands are the levels themselves) against the exact levels, on data shaped like the lab's: values
# N(0, 1) with 0.4% of them 8x out, each token's largest and smallest kept exact (the device's 2 value slots), mid and
# half-range of the rest in f16, 16 levels fitted by 1-D k-means on the normalized values, random queries in [-1, 1]
# against N(0, 1) keys (a flat softmax: the output is a small average, the worst case for a systematic error).
# A level's rounding repeats for every token that uses it, so it does not average out the way per-token roundings do
# (v12's reason for splitting tf32 levels into hi + lo). Measured here: 2.3e-4 (3 query draws), under the 1e-3 check
# of v13+ on a group (DecodeKernelVersions.CheckTolerance), above v13's measured 1.6e-5.
import random, struct, math
random.seed(1)
def f16(x): return struct.unpack('e', struct.pack('e', x))[0]
D, N, G = 128, 4099, 4
rows = []
for t in range(N):
    r = [random.gauss(0, 1) * (8 if random.random() < 0.004 else 1) for _ in range(D)]
    rows.append(r)
# per token: the largest and smallest kept exact, the rest normalized by f16 mid / half-range
norm = []
meta = []
for r in rows:
    imax = max(range(D), key=lambda c: r[c]); imin = min(range(D), key=lambda c: r[c])
    rest = [r[c] for c in range(D) if c not in (imax, imin)]
    mx, mn = max(rest), min(rest)
    z, rg = f16((mx + mn) / 2), f16((mx - mn) / 2)
    meta.append((imax, imin, z, rg))
    norm.append([(r[c] - z) / rg for c in range(D)])
sample = [u for i, nr in enumerate(norm[:600]) for c, u in enumerate(nr) if c not in meta[i][:2]]
lev = [-1 + 2 * (j + 0.5) / 16 for j in range(16)]
for _ in range(30):   # Lloyd
    s = [0.0] * 16; n = [0] * 16
    for u in sample:
        j = min(range(16), key=lambda j: abs(u - lev[j])); s[j] += u; n[j] += 1
    lev = [s[j] / n[j] if n[j] else lev[j] for j in range(16)]
lev.sort()
mids = [(lev[j] + lev[j + 1]) / 2 for j in range(15)]
lev16 = [f16(x) for x in lev]
print('max level rounding', max(abs(a - b) for a, b in zip(lev, lev16)))
def code(u): return sum(1 for m in mids if u > m)
codes = [[code(u) for u in nr] for nr in norm]
for trial in range(3):
    q = [[random.uniform(-1, 1) for _ in range(D)] for _ in range(G)]
    keys = [[random.gauss(0, 1) for _ in range(D)] for _ in range(N)]
    err2 = ref2 = 0.0
    for g in range(G):
        s = [sum(q[g][c] * keys[t][c] for c in range(D)) / math.sqrt(D) for t in range(N)]
        m = max(s); w = [math.exp(x - m) for x in s]; l = sum(w)
        for c in range(D):
            a = b = 0.0
            for t in range(N):
                imax, imin, z, rg = meta[t]
                if c in (imax, imin): v = v16 = rows[t][c]
                else: v = z + rg * lev[codes[t][c]]; v16 = z + rg * lev16[codes[t][c]]
                a += w[t] * v; b += w[t] * v16
            ref2 += (a / l) ** 2; err2 += ((a - b) / l) ** 2
    print('trial', trial, 'rel L2 (f16 levels vs exact levels):', math.sqrt(err2 / ref2))
