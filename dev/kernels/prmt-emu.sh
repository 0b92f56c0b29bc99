#!/usr/bin/env bash
# Host check of kernel v15's prmt lookup (no GPU): extracts the "BEGIN v15 lookup" .. "END v15 lookup" text of
# src/Kvq.Cuda/Kernels/attn_v7.cuh, compiles dev/kernels/prmt-emu.cpp around it with an emulated prmt.b32 (g++ or
# clang++) and runs it. Exit code 0 when every lookup and mma operand register matches the plain table lookup.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed -n '/^\/\/ BEGIN v15 lookup/,/^\/\/ END v15 lookup/p' "$repo/src/Kvq.Cuda/Kernels/attn_v7.cuh" > "$tmp/v15_lookup.inc"
grep -q 'lut16_word' "$tmp/v15_lookup.inc" || { echo "prmt-emu: no v15 lookup section in attn_v7.cuh" >&2; exit 2; }
cxx="${CXX:-$(command -v g++ || command -v clang++)}"
"$cxx" -std=c++17 -O2 -Wall -Wno-unknown-pragmas -I "$tmp" -o "$tmp/prmt-emu" "$here/prmt-emu.cpp"
"$tmp/prmt-emu"
