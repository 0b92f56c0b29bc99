using Kvq.Cache.Offload;
using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>How an <see cref="OffloadedKvSequence"/>'s tiers are sized, in 128-token blocks (each block holds every layer
/// and KV head).</summary>
/// <param name="DeviceBlocks">Device-home blocks: the recent part of the sequence and what has not moved to the host;
/// new tokens are appended here.</param>
/// <param name="WorkingBlocks">Device slots per (layer, KV head) for host blocks that attention reads (the working set:
/// at least the budget's blocks, more to keep what the next steps will read again and what speculation brings in).</param>
/// <param name="HostBlocks">Blocks the pinned host tier holds.</param>
/// <param name="Speculate">Predict layer l+1's blocks from layer l's input (its query through layer l+1's Wq) and start
/// their copies while layer l computes.</param>
public sealed record OffloadSizes(int DeviceBlocks, int WorkingBlocks, int HostBlocks, bool Speculate = true)
{
    private const int BT = CudaKvCache.BlockTokens;

    /// <summary>
    /// Sizes for a sequence of at most <paramref name="maxTokens"/> tokens whose first <paramref name="prefillTokens"/>
    /// come as a prefill and whose older blocks then move to the host as <paramref name="spill"/> says: the device holds
    /// the prefill and the first decode step's token (a prefill chunk attends over device-home blocks only, and blocks
    /// move after that step) or, once blocks move, the first block, the kept recent blocks, the one just filled and the
    /// one a step opens before the spill (<see cref="HostSpill"/> moves blocks after the step), whichever is more; the working slots hold twice the most blocks the
    /// budget reads in a step (every block for `full` and dense layers), at most every block; the host holds every block.
    /// </summary>
    public static OffloadSizes For(KvOffloadBudget budget, int maxTokens, int prefillTokens, HostSpill spill)
    {
        ArgumentNullException.ThrowIfNull(budget);
        ArgumentNullException.ThrowIfNull(spill);
        if (maxTokens <= 0) throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "an offloaded sequence holds at least one token");
        int maxBlocks = (maxTokens + BT - 1) / BT;
        int prefill = (Math.Clamp(prefillTokens + 1, 1, maxTokens) + BT - 1) / BT;   // + the first decode step's token, appended before anything moves
        int device = Math.Min(maxBlocks, Math.Max(prefill, 1 + spill.KeepRecentBlocks + 2));
        int working = budget.Full || budget.DenseLayers > 0 ? maxBlocks : Math.Min(maxBlocks, 2 * budget.BlocksFor(maxBlocks) + 2);
        return new OffloadSizes(device, Math.Max(1, working), maxBlocks);
    }
}
