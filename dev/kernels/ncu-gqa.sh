#!/usr/bin/env bash
# Runs on the GPU machine from the checkout root (the lab staged by run-on-gpu.sh; this script copied beside it):
# Nsight Compute profiles of one launch each of the production decode kernels at 128k tokens (issue 19, the GQA gap):
# speed of light, occupancy, launch statistics, warp states (stall reasons), scheduler statistics and the source
# counters' hottest SASS lines. One text report per kernel in $OUT (default /tmp/kvq-ncu), then a short summary of
# the numbers that decide the next kernel (registers, achieved occupancy, issue-slot use, top stall reasons).
# KERNELS: space-separated shape:format:kernel-regex triples (default: GQA nuq4-1%, GQA dense nuq4, MHA nuq4-1%, GQA f16).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-/tmp/kvq-ncu}"; mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export KVQ_CUBIN_CACHE="${KVQ_CUBIN_CACHE:-/tmp/kvq-cubin}"
ncu="$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)"
if [ -z "$ncu" ]; then echo "ncu not found" | tee "$out/ncu-summary.txt"; exit 3; fi
kernels="${KERNELS:-gqa:nuq4:^attn_nuq_k4_v4_g4_r9\$ gqa:nuq4d:^attn_nuq_k4_v4_g4_r9_dense\$ mha:nuq4:^attn_nuq_k4_v4_g1_r9\$ gqa:f16:^attn_f16_g4\$}"
tokens="${TOKENS:-131072}"
sections="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section SourceCounters"
: >"$out/ncu-summary.txt"
for k in $kernels; do
  shape="${k%%:*}"; rest="${k#*:}"; fmt="${rest%%:*}"; rx="${rest#*:}"
  name="ncu-${shape}-${fmt//@/-v}-${tokens}.txt"
  # shellcheck disable=SC2086
  timeout 240 "$ncu" --kernel-name "regex:$rx" --launch-count 1 $sections \
    "$here/lab/KernelLab" --sizes "$tokens" --shapes "$shape" --formats "$fmt" --check 0 --reps 3 >"$out/$name" 2>&1
  echo "== $shape $fmt $tokens (exit $?)" | tee -a "$out/ncu-summary.txt"
  grep -E "^ +(Duration|Registers Per Thread|Achieved Occupancy|Theoretical Occupancy|Block Limit Registers|Block Limit Shared Mem|Issue Slots Busy|Issued Warp Per Scheduler|No Eligible|Active Warps Per Scheduler|Eligible Warps Per Scheduler|Warp Cycles Per Issued Instruction|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Executed Ipc Active|Local Memory Spilling|Dynamic Shared Memory Per Block|Static Shared Memory Per Block) " "$out/$name" \
    | sed 's/^ */  /' | tee -a "$out/ncu-summary.txt"
  grep -E "Stall|stall" "$out/$name" | head -n 12 | sed 's/^ */  /' | tee -a "$out/ncu-summary.txt"
done
