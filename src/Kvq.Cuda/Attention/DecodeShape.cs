namespace Kvq.Cuda.Attention;

/// <summary>One layer's decode-attention geometry: KV heads, query heads per KV head (GQA group) and head dim
/// (the kernels are written for 128).</summary>
public sealed record DecodeShape(int KvHeads, int Group, int HeadDim = 128)
{
    /// <summary>KeySlots, ValueSlots: outlier slots per token and KV head of the nuqB-1% layout (the dense layout has
    /// none). KeyListWords: u32 words of the sparse layout's key outlier record per KV head and chunk (a count and up to 47
    /// entries; kv_encode.cu KLIST).</summary>
    public const int Chunk = 256, Tile = 8, KeySlots = 4, ValueSlots = 2, KeyListWords = 48;
    public int QueryHeads => KvHeads * Group;

    public void Validate()
    {
        if (HeadDim != 128) throw new NotSupportedException($"the CUDA decode kernels are written for head dim 128 (got {HeadDim})");
        if (Group != 1 && Group != 4) throw new NotSupportedException($"compiled GQA groups are 1 and 4 query heads per KV head (got {Group})");
        if (KvHeads <= 0) throw new ArgumentOutOfRangeException(nameof(KvHeads), KvHeads, "need at least one KV head");
    }

    /// <summary>Tokens rounded up to whole chunks: every per-head array is this long (padding encodes zeros).</summary>
    public static long Padded(long tokens) => (tokens + Chunk - 1) / Chunk * Chunk;
}

/// <summary>How a decode pass is cut: split-K so that the grid fills the device even with few heads, each split a
/// run of whole chunks.</summary>
public readonly record struct SplitPlan(int Splits, int ChunksPerSplit)
{
    /// <summary>About <paramref name="blocksPerSm"/> blocks per multiprocessor in all (kv heads x splits), but at least
    /// two chunks per split while that still leaves a block for every multiprocessor: a block's set-up (tables, angles
    /// in double) and the reduce cost about as much as one chunk (H100 run 26, LLaMA-7B shape at 4k tokens: 16 splits of
    /// one chunk 37.6 us for nuq4-1%, 8 splits of two 33.2 us; nuq2-1% 34.0 vs 30.2 us). Not for the f16 cache
    /// (<paramref name="pairShortSplits"/> false): its kernel slowed from 37.1 to 44.7 us with it (run 27).</summary>
    public static SplitPlan For(long tokens, int kvHeads, int multiprocessors, int blocksPerSm = 4, bool pairShortSplits = true)
    {
        int chunks = (int)Math.Max(1, (tokens + DecodeShape.Chunk - 1) / DecodeShape.Chunk);
        int want = Math.Clamp((multiprocessors * blocksPerSm + kvHeads - 1) / kvHeads, 1, chunks);
        int per = (chunks + want - 1) / want;
        if (pairShortSplits && per == 1 && chunks >= 2 && (long)kvHeads * ((chunks + 1) / 2) >= multiprocessors) per = 2;
        return new SplitPlan((chunks + per - 1) / per, per);
    }
}
