#!/usr/bin/env python3
# Static SASS instructions of attn_v7 kernels' score (keys) loop, no GPU: NVRTC 11.8 (dev/kernels/nvrtc-check.sh
# unpacks it into /tmp/kvq-nvrtc11; run that once first) compiles each asked version (4 bits, G = 4, slots layout) to
# an sm_90 cubin twice - as it is, and with the score loop compiled out (a copy of the headers where NOKEYS sets the
# trip count of v16's two halves and of the older versions' tile loop to 0) - and prints the kernels' .text sizes / 16
# bytes (one SASS instruction each) and their difference: the score loop's instructions (v16: per warp and chunk of 32
# tokens, and per (token, KV head); v9-v15 at G = 4 run theirs as a run-time loop over 4 tiles, so theirs is static only). The difference also holds what only the loop used (the compiler drops it with the loop),
# so it is the loop's cost as the kernel pays it. Used for kernel v16's prediction (docs/perf.md).
# Usage: dev/kernels/sass-keys.py [VERSION ...]   (default 11 15 16; about a minute per version on a loaded machine)
import ctypes, os, re, shutil, struct, sys, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nvrtc11

versions = [int(v) for v in sys.argv[1:]] or [11, 15, 16]


def text_instructions(src):
    ok, log, prog, _ = nvrtc11.compile(src, "keys.cu", ["--gpu-architecture=sm_90", "--std=c++17"])
    if not ok: sys.exit(log)
    size = ctypes.c_size_t(); nvrtc11._lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value); nvrtc11._lib.nvrtcGetCUBIN(prog, buf)
    b = buf.raw   # ELF64: section headers, their names, the .text.<kernel> sizes
    shoff, = struct.unpack_from("<Q", b, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", b, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", b, shoff + i * shentsize) for i in range(shnum)]
    names = secs[shstrndx][4]
    out = {}
    for s in secs:
        name = b[names + s[0]: b.index(b"\0", names + s[0])].decode()
        if name.startswith(".text.attn_"): out[name[6:]] = s[5] // 16
    return out


tmp = tempfile.mkdtemp()
try:
    for f in os.listdir(nvrtc11.KERNELS):
        if f.endswith(".cuh"): shutil.copy(os.path.join(nvrtc11.KERNELS, f), tmp)
    path = os.path.join(tmp, "attn_v7.cuh")
    s = open(path).read()
    # The loops are compiled out through their bounds: a statement wrapped around a "#pragma unroll" loop changes how
    # NVRTC 11.8 unrolls it (docs/perf.md, v16), so the kernel "with" must be the kernel as it is.
    hooks = [("for (int hb = 0; hb < (K18 ? 0 : 2); ++hb)", "for (int hb = 0; hb < (K18 || NOKEYS ? 0 : 2); ++hb)"),
             ("for (int sq = 0; sq < 2; ++sq)", "for (int sq = 0; sq < (NOKEYS ? 0 : 2); ++sq)"),
             ("for (int tile = 0; tile < (KQ ? 0 : TPW4); ++tile)", "for (int tile = 0; tile < (KQ || NOKEYS ? 0 : TPW4); ++tile)")]
    for a, b in hooks:
        if s.count(a) != 1: sys.exit(f"sass-keys: attn_v7.cuh no longer has one '{a}'")
        s = s.replace(a, b)
    s = s.replace("#define KVQ_ATTN_V7_CUH", "#define KVQ_ATTN_V7_CUH\n#ifndef NOKEYS\n#define NOKEYS 0\n#endif", 1)
    open(path, "w").write(s)
    nvrtc11.KERNELS = tmp
    for v in versions:
        n = [list(text_instructions(f'#define NOKEYS {k}\n#include "attn_v7.cuh"\nNUQ_V7_ANY(4, 4, 2, {v}, , KSLOTS, VSLOTS, 0)\n').values())[0]
             for k in (0, 1)]
        loop = n[0] - n[1]
        if v >= 16:   # v16's halves (v18's two groups of 4 slices) are unrolled: the static count is what a warp runs per chunk (32 tokens)
            print(f"v{v}: kernel {n[0]} SASS instructions, without the score loop {n[1]}: the loop {loop} per warp and chunk, "
                  f"{loop / 32:.1f} per (token, KV head)")
        else:         # a run-time loop over the warp's 4 tiles at G = 4 (its #pragma unroll is not applied)
            print(f"v{v}: kernel {n[0]} SASS instructions, without the score loop {n[1]}: the loop {loop} static "
                  f"(a run-time loop over 4 tiles of 8 tokens, which ptxas may unroll in part)")
finally:
    shutil.rmtree(tmp)
