#!/usr/bin/env python3
# Static PTX instruction counts of attn_v7 kernels per section of attn_v7.cuh (no GPU): compiles a few entry macros
# with NVRTC 11.8 (dev/kernels/nvrtc-check.sh unpacks it into /tmp/kvq-nvrtc11; run that once first), -lineinfo, and
# attributes each PTX instruction to the attn_v7 source line it came from (an inlined helper's instructions to its
# caller's line), then sums per section: prologue, chunk setup, scores (keys), key outliers, softmax (with the next
# chunk's key copy), values, value outliers, epilogue. The score loop is compiled once per 8-token tile (count / 8 =
# per token and KV head); the softmax and values sections are unrolled over a warp's 32 tokens (count / 32); loops
# with run-time trip counts (outliers, copies) are counted once. PTX, not SASS: ptxas removes moves and conversions,
# so the differences between versions are the useful part. Used for kernels v15 and v16's predictions (docs/perf.md).
# Usage: dev/kernels/ptx-sections.py [VERSION ...]   (default 9 11 13 15 16; 4 bits, G = 4, slots layout)
import os, re, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nvrtc11
versions = [int(v) for v in sys.argv[1:]] or [9, 11, 13, 15, 16]
src = '#include "attn_v7.cuh"\n' + "".join(f"NUQ_V7_ANY(4, 4, 2, {v}, , KSLOTS, VSLOTS, 0)\n" for v in versions)
ok, log, prog, headers = nvrtc11.compile(src, "sections.cu", ["--gpu-architecture=compute_90", "--std=c++17", "-lineinfo"])
if not ok: sys.exit(log)
ptx = nvrtc11.ptx(prog)
files = dict(re.findall(r'^\s*\.file\s+(\d+)\s+"([^"]+)"', ptx, re.M))
v7 = next(k for k, f in files.items() if f.endswith("attn_v7.cuh"))
lines = headers["attn_v7.cuh"].split("\n")
def first(pattern, nth=1):
    hits = [i + 1 for i, l in enumerate(lines) if pattern in l]
    return hits[nth - 1]
start = first("__device__ void attn_v7(")
secs = [(0, "prologue"), (first("for (int chunk = c0"), "chunk setup"), (first("// ---- scores"), "scores (keys)"),
        (first("if constexpr (KS > 0)"), "key outliers"), (first("cp_async_wait_all();", 2), "softmax"),
        (first("// ---- values"), "values"), (first("if constexpr (VS > 0)"), "value outliers"),
        ([i + 1 for i, l in enumerate(lines) if l == "    __syncthreads();"][1], "epilogue")]
for m in re.finditer(r"\.entry (\w+)\((.*?)\n\}\n", ptx, re.S):
    counts, cur = {}, None
    for l in m.group(0).split("\n"):
        s = l.strip()
        if s.startswith(".loc\t") or s.startswith(".loc "):
            mm = re.match(r"\.loc\s+(\d+)\s+(\d+)\s+\d+(?:, function_name \S+, inlined_at (\d+) (\d+) \d+)?", s)
            f, ln, inf, inl = mm.group(1), int(mm.group(2)), mm.group(3), mm.group(4)
            r = ln if (f == v7 and inf != v7) else (int(inl) if inf == v7 else None)
            if r is not None and r >= start: cur = r
            continue
        if not s.endswith(";") or s.startswith((".reg", ".shared", ".param", ".local", "//", ".file")) or cur is None: continue
        name = max((l0, nm) for l0, nm in secs if cur >= l0)[1]
        counts[name] = counts.get(name, 0) + 1
    print(m.group(1), ", ".join(f"{nm} {counts.get(nm, 0)}" for _, nm in secs), f"(total {sum(counts.values())})")
