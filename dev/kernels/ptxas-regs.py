#!/usr/bin/env python3
# Registers, stack frame and spills of attn_v7 kernels as ptxas reports them (no GPU): NVRTC 11.8 (unpacked by
# dev/kernels/nvrtc-check.sh into /tmp/kvq-nvrtc11) compiles a small file that instantiates only the asked versions
# (4 bits, G = 4, the three layouts) to an sm_90 cubin with --ptxas-options=-v. The device compiles with NVRTC 13, whose
# ptxas may allocate differently; the whole lab file is too big for NVRTC 11.8's cubin step (hence nvrtc-check's PTX).
# Usage: dev/kernels/ptxas-regs.py [VERSION ...]   (default 9 15; about a minute per version on a loaded machine)
import ctypes, os, re, sys
here = os.path.dirname(os.path.abspath(__file__))
kernels = os.path.join(here, "..", "..", "src", "Kvq.Cuda", "Kernels")
libdir = os.path.join(os.environ.get("NVRTC_CACHE", "/tmp/kvq-nvrtc11"), "root/usr/lib/x86_64-linux-gnu")
ctypes.CDLL(os.path.join(libdir, "libnvrtc-builtins.so.11.8"), mode=ctypes.RTLD_GLOBAL)   # found by its soname later
lib = ctypes.CDLL(os.path.join(libdir, "libnvrtc.so.11.2"))
versions = [int(v) for v in sys.argv[1:]] or [9, 15]
src = '#include "attn_v7.cuh"\n' + "".join(f"NUQ_V7_LAYOUTS(4, 4, 2, {v})\n" for v in versions)
headers = {}
def walk(text):
    for name in re.findall(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', text, re.M):
        if name not in headers:
            headers[name] = open(os.path.join(kernels, name)).read()
            walk(headers[name])
walk(src)
prog = ctypes.c_void_p()
n = len(headers)
texts = (ctypes.c_char_p * n)(*[t.encode() for t in headers.values()])
names = (ctypes.c_char_p * n)(*[k.encode() for k in headers])
assert lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"regs.cu", n, texts, names) == 0
opts = [b"--gpu-architecture=sm_90", b"--std=c++17", b"--ptxas-options=-v"]
rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
size = ctypes.c_size_t(); lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
log = ctypes.create_string_buffer(size.value); lib.nvrtcGetProgramLog(prog, log)
text = log.value.decode()
if rc: sys.exit(text)
for m in re.finditer(r"Function properties for (attn_\w+)\n.*?(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads\n"
                     r".*?Used (\d+) registers, (\d+) bytes smem", text, re.S):
    k, frame, st, ld, regs, smem = m.groups()
    print(f"{k}: {regs} registers, stack frame {frame} B, spill stores {st} B, spill loads {ld} B, static shared {smem} B")
