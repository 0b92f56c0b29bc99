using Kvq.Cuda.Model;

namespace Kvq.Cuda.Offload;

/// <summary>
/// When an <see cref="OffloadedKvSequence"/>'s blocks move to the host on their own: after each decode step, every whole
/// block but the first (which holds the sink and BOS, read every step) and the last <see cref="KeepRecentBlocks"/> whole
/// ones (the recent window the budget always reads) goes to the pinned host tier, so the device keeps a bounded set of
/// home blocks however long the sequence grows. Prefill chunks move nothing (they attend over device-home blocks only).
/// </summary>
public sealed class HostSpill
{
    private const int BT = CudaKvCache.BlockTokens;

    /// <summary>Whole blocks kept on the device before the block being filled.</summary>
    public int KeepRecentBlocks { get; }

    public HostSpill(int keepRecentBlocks)
    {
        if (keepRecentBlocks < 0) throw new ArgumentOutOfRangeException(nameof(keepRecentBlocks), keepRecentBlocks, "a count of blocks >= 0");
        KeepRecentBlocks = keepRecentBlocks;
    }

    /// <summary>Keeps the blocks a budget's recent window (<paramref name="recentTokens"/> before each query) can reach.</summary>
    public static HostSpill ForRecent(int recentTokens) => new(Math.Max(1, (recentTokens + BT - 1) / BT));

    /// <summary>The runs [From, To) of device-home blocks to move now in a sequence of <paramref name="length"/> tokens,
    /// where <paramref name="onDevice"/> says whether a block's home is still the device.</summary>
    public List<(int From, int To)> Runs(int length, Func<int, bool> onDevice)
    {
        var runs = new List<(int, int)>();
        int end = length / BT - KeepRecentBlocks;   // blocks [1, end) go
        for (int b = 1; b < end;)
        {
            if (!onDevice(b)) { b++; continue; }
            int from = b;
            while (b < end && onDevice(b)) b++;
            runs.Add((from, b));
        }
        return runs;
    }
}
