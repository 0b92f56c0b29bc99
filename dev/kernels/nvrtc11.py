# NVRTC 11.8 from Python (no GPU, no CUDA toolkit): the libraries that dev/kernels/nvrtc-check.sh unpacks into
# /tmp/kvq-nvrtc11 (run that once first), loaded with ctypes. Shared by ptx-sections.py and ptxas-regs.py. Written by
# hand: no maintained Python package wraps NVRTC 11.8 without a CUDA install (cuda-python needs the toolkit's driver).
import ctypes, os, re

_here = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.join(_here, "..", "..", "src", "Kvq.Cuda", "Kernels")
_libdir = os.path.join(os.environ.get("NVRTC_CACHE", "/tmp/kvq-nvrtc11"), "root/usr/lib/x86_64-linux-gnu")
ctypes.CDLL(os.path.join(_libdir, "libnvrtc-builtins.so.11.8"), mode=ctypes.RTLD_GLOBAL)   # found by its soname later
_lib = ctypes.CDLL(os.path.join(_libdir, "libnvrtc.so.11.2"))


def headers(src):
    """Every header src includes from src/Kvq.Cuda/Kernels, transitively: {name: text}."""
    found = {}
    def walk(text):
        for name in re.findall(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', text, re.M):
            if name not in found:
                found[name] = open(os.path.join(KERNELS, name)).read()
                walk(found[name])
    walk(src)
    return found


def compile(src, name, options):
    """Compiles src with its kernel headers. Returns (ok, log, program handle, headers)."""
    found = headers(src)
    prog = ctypes.c_void_p()
    n = len(found)
    texts = (ctypes.c_char_p * n)(*[t.encode() for t in found.values()])
    names = (ctypes.c_char_p * n)(*[k.encode() for k in found])
    assert _lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), n, texts, names) == 0
    opts = [o.encode() for o in options]
    rc = _lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t(); _lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value); _lib.nvrtcGetProgramLog(prog, log)
    return rc == 0, log.value.decode(), prog, found


def ptx(prog):
    """The compiled program's PTX text."""
    size = ctypes.c_size_t(); _lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value); _lib.nvrtcGetPTX(prog, buf)
    return buf.value.decode()
