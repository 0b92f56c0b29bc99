#!/usr/bin/env bash
# Host check of kernel v16's keys (no GPU): extracts v15's lookup text ("BEGIN v15 lookup" .. "END v15 lookup") and
# v16's ("BEGIN v16 keys" .. "END v16 keys") from src/Kvq.Cuda/Kernels/attn_v7.cuh, compiles dev/kernels/kq-emu.cpp
# around them with emulated prmt.b32, cvt.rn.f16x2.f32 and fma.rn.f16x2 (g++ 12+ or clang++ for _Float16) and runs it:
# whole chunks of scores against RoPE attention scores in double. Exit code 0 when they match (seconds).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
src="$repo/src/Kvq.Cuda/Kernels/attn_v7.cuh"
{ sed -n '/^\/\/ BEGIN v15 lookup/,/^\/\/ END v15 lookup/p' "$src"; sed -n '/^\/\/ BEGIN v16 keys/,/^\/\/ END v16 keys/p' "$src"; } > "$tmp/v16_keys.inc"
grep -q 'lut16_pairs' "$tmp/v16_keys.inc" || { echo "kq-emu: no v16 keys section in attn_v7.cuh" >&2; exit 2; }
cxx="${CXX:-$(command -v g++ || command -v clang++)}"
"$cxx" -std=c++17 -O2 -Wall -Wno-unknown-pragmas -I "$tmp" -o "$tmp/kq-emu" "$here/kq-emu.cpp"
"$tmp/kq-emu"
