namespace Kvq.Cuda.Offload;

/// <summary>The one-line account of an <see cref="OffloadedKvSequence"/> the CLI prints after a run: where its blocks
/// are, what the tiers allocated, and from <see cref="OffloadStats"/> the hit rate, the share of transfers hidden behind
/// compute, the bytes moved each way and the time spent.</summary>
public static class OffloadReport
{
    public static string Describe(OffloadedKvSequence seq)
    {
        ArgumentNullException.ThrowIfNull(seq);
        var s = seq.Stats;
        long blocks = (seq.Length + Model.CudaKvCache.BlockTokens - 1) / Model.CudaKvCache.BlockTokens;
        double perStep = s.Selections == 0 ? 0 : s.ChosenBlocks / (double)s.Selections;
        return $"offload {seq.Budget.Name["offload@".Length..]} (GPU host tier): {seq.HostBlocksUsed} of {blocks} blocks on the host | " +
               $"{perStep:F1} blocks read per layer, KV head and step over {s.Selections:N0} selections | " +
               $"hit rate {s.HitRate:P1} ({s.Hits:N0} of {s.HostBlocksChosen:N0} host blocks already on the device) | " +
               $"transfers hidden {s.HiddenShare:P1} ({s.PrefetchedUsed:N0} of {s.Prefetched:N0} prefetched blocks used, {s.DemandFetched:N0} on demand) | " +
               $"bytes: device {seq.DeviceBytes:N0} (summaries {seq.SummaryBytes:N0}), pinned host {seq.HostBytes:N0}, " +
               $"copied {s.PrefetchBytes:N0} ahead + {s.DemandBytes:N0} on demand | " +
               $"copy stream {s.PrefetchMs:F1} ms ahead + {s.DemandMs:F1} ms on demand, selection {s.SelectMs:F1} ms";
    }
}
