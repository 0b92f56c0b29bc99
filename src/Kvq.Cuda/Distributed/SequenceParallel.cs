namespace Kvq.Cuda.Distributed;

/// <summary>Sequence parallelism of a model's sequences: <see cref="Shards"/> contiguous shards, all in this process
/// (checking mode, <see cref="Exchange"/> null) or one per rank of <see cref="Exchange"/>.</summary>
public sealed record SequenceParallel(int Shards, IShardExchange? Exchange = null)
{
    public int Shards { get; } = Shards >= 1 ? Shards : throw new ArgumentOutOfRangeException(nameof(Shards), Shards, "at least one shard");
}
