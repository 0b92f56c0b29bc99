#!/usr/bin/env bash
# Compiles the embedded CUDA kernels to PTX here, without a GPU, to catch compile errors before spending device
# time: NVRTC 11.8 from Debian bookworm's non-free component (libnvrtc11.2 + libnvrtc-builtins11.8, unpacked into a
# cache folder, nothing installed system-wide), driven through Python ctypes, --gpu-architecture=compute_90.
# The device compiles with NVRTC 13 to a cubin: PTX here proves the C++ compiles, not what ptxas makes of it
# (NVRTC 11.8's own cubin step recurses without end on decode_attention.cu, hence PTX).
# Include headers are handed to NVRTC by name and text as KernelLoader does (KernelSources.Includes: quoted
# #include lines, looked up beside the file and in src/Kvq.Cuda/Kernels).
# Usage: dev/kernels/nvrtc-check.sh [file.cu ...]   (default: src/Kvq.Cuda/Kernels/*.cu and the kernel lab's .cu)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${NVRTC_CACHE:-/tmp/kvq-nvrtc11}"
lib="$cache/root/usr/lib/x86_64-linux-gnu"
if [ ! -e "$lib/libnvrtc.so.11.2" ]; then
  mkdir -p "$cache/lists/partial" "$cache/debs"
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > "$cache/nonfree.sources"
  apt=(-o Dir::Etc::SourceList="$cache/nonfree.sources" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$cache/lists")
  apt-get "${apt[@]}" update >/dev/null
  (cd "$cache/debs" && apt-get "${apt[@]}" download libnvrtc11.2 libnvrtc-builtins11.8 >/dev/null 2>&1)
  for f in "$cache"/debs/*.deb; do dpkg -x "$f" "$cache/root"; done
fi
files=("$@")
[ ${#files[@]} -gt 0 ] || files=("$repo"/src/Kvq.Cuda/Kernels/*.cu "$repo"/dev/kernels/KernelLab/Kernels/*.cu)
LD_LIBRARY_PATH="$lib" KERNELS="$repo/src/Kvq.Cuda/Kernels" python3 - "$lib/libnvrtc.so.11.2" "${files[@]}" <<'PY'
import ctypes, os, re, sys
lib = ctypes.CDLL(sys.argv[1])
bad = 0
def includes(path):
    found, seen = [], set()
    def walk(text, folder):
        for name in re.findall(rb'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', text, re.M):
            if name in seen: continue
            seen.add(name)
            for d in (folder, os.environ["KERNELS"]):
                f = os.path.join(d, name.decode())
                if os.path.exists(f): break
            else: raise SystemExit(f"{path}: include {name.decode()} not found")
            body = open(f, "rb").read()
            found.append((name, body))
            walk(body, os.path.dirname(f))
    walk(open(path, "rb").read(), os.path.dirname(path))
    return found
for path in sys.argv[2:]:
    src = open(path, "rb").read()
    hdr = includes(path)
    prog = ctypes.c_void_p()
    n = len(hdr)
    texts = (ctypes.c_char_p * max(n, 1))(*[h[1] for h in hdr])
    names = (ctypes.c_char_p * max(n, 1))(*[h[0] for h in hdr])
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, path.encode(), n, texts if n else None, names if n else None) == 0
    opts = [b"--gpu-architecture=compute_90", b"--std=c++17", b"-lineinfo"]
    r = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    n = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetProgramLog(prog, log)
    if r == 0:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
        print(f"{path}: ok, {n.value} bytes of PTX ({len(hdr)} headers)")
    else:
        bad += 1
        print(f"{path}: FAILED\n" + log.value.decode())
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
sys.exit(1 if bad else 0)
PY
