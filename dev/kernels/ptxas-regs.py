#!/usr/bin/env python3
# Registers, stack frame and spills of attn_v7 kernels as ptxas reports them (no GPU): NVRTC 11.8 (unpacked by
# dev/kernels/nvrtc-check.sh into /tmp/kvq-nvrtc11) compiles a small file that instantiates only the asked versions
# (4 bits, G = 4, the three layouts) to an sm_90 cubin with --ptxas-options=-v. The device compiles with NVRTC 13, whose
# ptxas may allocate differently; the whole lab file is too big for NVRTC 11.8's cubin step (hence nvrtc-check's PTX).
# Usage: dev/kernels/ptxas-regs.py [VERSION ...]   (default 9 15 16; about a minute per version on a loaded machine)
import os, re, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nvrtc11
versions = [int(v) for v in sys.argv[1:]] or [9, 15, 16]
src = '#include "attn_v7.cuh"\n' + "".join(f"NUQ_V7_LAYOUTS(4, 4, 2, {v})\n" for v in versions)
ok, text, _, _ = nvrtc11.compile(src, "regs.cu", ["--gpu-architecture=sm_90", "--std=c++17", "--ptxas-options=-v"])
if not ok: sys.exit(text)
for m in re.finditer(r"Function properties for (attn_\w+)\n.*?(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads\n"
                     r".*?Used (\d+) registers, (\d+) bytes smem", text, re.S):
    k, frame, st, ld, regs, smem = m.groups()
    print(f"{k}: {regs} registers, stack frame {frame} B, spill stores {st} B, spill loads {ld} B, static shared {smem} B")
