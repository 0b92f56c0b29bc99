#!/usr/bin/env bash
# Device-side syntax and template check of the embedded CUDA kernels with clang, no CUDA toolkit, no GPU:
#   clang++ -x cuda --cuda-device-only --cuda-gpu-arch=sm_80 -nocudainc -nocudalib -fsyntax-only
# with dev/kernels/nvrtc-prelude.h standing in for what NVRTC predefines (attributes, threadIdx & co, vector types,
# intrinsics), and -I for the kernels' own headers (the folder of each file and src/Kvq.Cuda/Kernels, as
# KernelLoader hands NVRTC the embedded .cuh files). It instantiates every kernel the files define, so a wrong
# name, type or template argument in moved code fails here before any device time is spent. It does not check what
# only NVRTC/ptxas see (inline PTX, register limits): dev/kernels/nvrtc-check.sh compiles to PTX with a real NVRTC.
# Needs clang (apt-get install -y clang). Usage: dev/kernels/syntax-check.sh [file.cu ...]
#   default: src/Kvq.Cuda/Kernels/*.cu and dev/kernels/KernelLab/Kernels/*.cu
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
clang="${CLANGXX:-$(command -v clang++ || ls /usr/bin/clang++-* 2>/dev/null | sort -V | tail -1)}"
[ -n "$clang" ] || { echo "syntax-check: no clang++ (apt-get install -y clang)" >&2; exit 2; }
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=("$repo"/src/Kvq.Cuda/Kernels/*.cu)
  for f in "$repo"/dev/kernels/KernelLab/Kernels/*.cu; do [ -e "$f" ] && files+=("$f"); done
fi
bad=0
for f in "${files[@]}"; do
  if "$clang" -x cuda --cuda-device-only --cuda-gpu-arch=sm_80 -nocudainc -nocudalib -fsyntax-only -std=c++17 \
      -Wno-unknown-cuda-version -ferror-limit=50 -include "$here/nvrtc-prelude.h" \
      -I "$(dirname "$f")" -I "$repo/src/Kvq.Cuda/Kernels" "$f"; then
    echo "$f: ok"
  else
    echo "$f: FAILED"
    bad=$((bad + 1))
  fi
done
[ $bad -eq 0 ] || { echo "$bad file(s) failed the syntax check" >&2; exit 1; }
