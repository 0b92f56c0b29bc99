#!/usr/bin/env bash
# One fast kvq for every x86-64 Linux machine (issue 16). NativeAOT fixes the vector width when it compiles
# (Vector256/Vector512.IsHardwareAccelerated are not tested at run time), so one image cannot hold both the AVX-512
# kernels and a fallback. This publishes three images into OUT:
#   kvq             x86-64-v2 (SSE4.2, POPCNT: any x86-64 CPU since ~2009), the command users run, with the plotting
#                   libraries (libSkiaSharp.so, libHarfBuzzSharp.so) beside it
#   kvq-x86-64-v3   AVX2, FMA, BMI (Haswell 2013+, Zen 2017+)
#   kvq-x86-64-v4   AVX-512 F/BW/CD/DQ/VL (Skylake-SP, Ice Lake, Zen 4+)
# At start kvq execs the highest of its siblings the CPU supports (src/Kvq.Cli/IsaDispatch.cs; KVQ_ISA_DISPATCH=0
# keeps the portable image). Copy the folder whole; kvq alone still runs everywhere, at the portable speed.
# A single image instead: dotnet publish src/Kvq.Cli -r linux-x64 -c Release -p:PublishAot=true (x86-64-v3 by default,
# see Kvq.Cli.csproj; -p:IlcInstructionSet=x86-64-v4 for AVX-512 machines only).
# Usage: dev/publish-kvq.sh OUT [ISA ...]   (default ISAs: x86-64-v3 x86-64-v4)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: dev/publish-kvq.sh OUT [ISA ...]}"
shift
isas=("$@")
[ ${#isas[@]} -gt 0 ] || isas=(x86-64-v3 x86-64-v4)
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log="$(mktemp)"
publish() { # ISA DIR
  # ILC's output is reused across instruction sets unless removed.
  rm -rf "$repo/src/Kvq.Cli/obj/Release/net10.0/linux-x64/native"
  if ! dotnet publish "$repo/src/Kvq.Cli" -r linux-x64 -c Release -p:PublishAot=true -p:IlcInstructionSet="$1" -o "$2" >"$log" 2>&1; then
    cat "$log"
    exit 1
  fi
}
for isa in "${isas[@]}"; do
  tmp="$(mktemp -d)"
  publish "$isa" "$tmp"
  cp "$tmp/kvq" "$out/kvq-$isa"
  rm -rf "$tmp"
done
publish x86-64-v2 "$out"
rm -f "$log" "$out"/*.dbg
ls -l "$out"
