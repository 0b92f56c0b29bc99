namespace Kvq.Cuda.Offload;

/// <summary>
/// What an <see cref="OffloadedKvSequence"/> moved and how well its speculation did, summed over decode steps, layers
/// and KV heads. A "host block" is a (layer, KV head, block) whose home is the pinned host tier; device-home blocks
/// never move and are not counted.
/// </summary>
public sealed class OffloadStats
{
    /// <summary>Selections (one per decode step, layer and KV head).</summary>
    public long Selections { get; internal set; }
    /// <summary>Blocks the selections chose, all tiers.</summary>
    public long ChosenBlocks { get; internal set; }
    /// <summary>Chosen host blocks.</summary>
    public long HostBlocksChosen { get; internal set; }
    /// <summary>Chosen host blocks already on the device when attention needed them (kept from earlier steps, or
    /// prefetched by speculation).</summary>
    public long Hits { get; internal set; }
    /// <summary>Of the hits, those brought in by this step's speculation (prefetched before the layer's query existed).</summary>
    public long PrefetchedUsed { get; internal set; }
    /// <summary>Blocks speculation copied in (used or not).</summary>
    public long Prefetched { get; internal set; }
    /// <summary>Chosen host blocks copied in on demand (a miss: the layer waits for them).</summary>
    public long DemandFetched { get; internal set; }
    public long PrefetchBytes { get; internal set; }
    public long DemandBytes { get; internal set; }
    /// <summary>Bytes per (layer, KV head, block) copy.</summary>
    public long BlockBytes { get; internal set; }
    /// <summary>Copy-stream time of the speculative copies (overlapped with the previous layer's compute) and of the
    /// demand copies (the layer's attention waits for them), ms (CUDA events).</summary>
    public double PrefetchMs { get; internal set; }
    public double DemandMs { get; internal set; }
    /// <summary>CPU time of the selections (the shared C# rule, all KV heads of a layer in parallel), ms.</summary>
    public double SelectMs { get; internal set; }

    /// <summary>Hits / chosen host blocks: the share of needed host blocks that did not make attention wait for a copy.</summary>
    public double HitRate => HostBlocksChosen == 0 ? 1 : Hits / (double)HostBlocksChosen;

    /// <summary>The share of the needed transfers that happened ahead of need: used prefetched bytes over used
    /// prefetched plus demand bytes (1 when nothing had to move).</summary>
    public double HiddenShare
    {
        get
        {
            double used = PrefetchedUsed * (double)BlockBytes, all = used + DemandBytes;
            return all == 0 ? 1 : used / all;
        }
    }

    public OffloadStats Clone() => (OffloadStats)MemberwiseClone();

    /// <summary>This minus an earlier snapshot (the counts of the steps between).</summary>
    public OffloadStats Since(OffloadStats before) => new()
    {
        Selections = Selections - before.Selections, ChosenBlocks = ChosenBlocks - before.ChosenBlocks,
        HostBlocksChosen = HostBlocksChosen - before.HostBlocksChosen, Hits = Hits - before.Hits,
        PrefetchedUsed = PrefetchedUsed - before.PrefetchedUsed, Prefetched = Prefetched - before.Prefetched,
        DemandFetched = DemandFetched - before.DemandFetched, PrefetchBytes = PrefetchBytes - before.PrefetchBytes,
        DemandBytes = DemandBytes - before.DemandBytes, BlockBytes = BlockBytes, PrefetchMs = PrefetchMs - before.PrefetchMs,
        DemandMs = DemandMs - before.DemandMs, SelectMs = SelectMs - before.SelectMs,
    };
}
