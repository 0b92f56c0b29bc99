namespace Kvq.Cache.Paging;

/// <summary>
/// The block pool cannot supply the blocks an operation needs. Counts are in blocks; the operation that threw left
/// the pool and every block table unchanged, so the caller may free or preempt a sequence and retry.
/// </summary>
public sealed class KvCacheFullException : Exception
{
    /// <summary>Blocks the operation needed from the pool (fresh blocks, copy-on-write targets included).</summary>
    public int RequestedBlocks { get; }
    /// <summary>Blocks that could be handed out at the time: free ones plus cached ones that may be evicted.</summary>
    public int AvailableBlocks { get; }
    public int TotalBlocks { get; }
    public int TokensPerBlock { get; }

    public KvCacheFullException(int requestedBlocks, int availableBlocks, int totalBlocks, int tokensPerBlock)
        : base($"KV cache full: needed {requestedBlocks} block(s), {availableBlocks} of {totalBlocks} available " +
               $"({tokensPerBlock} tokens per block)")
    {
        RequestedBlocks = requestedBlocks;
        AvailableBlocks = availableBlocks;
        TotalBlocks = totalBlocks;
        TokensPerBlock = tokensPerBlock;
    }
}
