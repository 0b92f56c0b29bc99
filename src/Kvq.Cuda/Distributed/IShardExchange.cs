namespace Kvq.Cuda.Distributed;

/// <summary>How the shards' attention states reach every rank: an all-gather in place over a buffer laid out
/// [rank][bytes per rank] in device memory, ordered on the legacy default stream after the kernels that wrote this
/// rank's part (<see cref="NcclCommunicator"/>). Without one, every shard lives in this process (checking mode).</summary>
public interface IShardExchange
{
    int Rank { get; }
    int WorldSize { get; }

    /// <summary>Fills every rank's part of <paramref name="buffer"/> from that rank: part r is bytes [r x
    /// <paramref name="bytesPerRank"/>, (r + 1) x bytesPerRank); this rank's part was written before the call.</summary>
    void AllGather(ulong buffer, long bytesPerRank);
}
