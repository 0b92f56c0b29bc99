namespace Kvq.Cache.Attention;

/// <summary>Per-thread scratch for attention, reused across calls (no allocation per token).</summary>
internal sealed class AttentionScratch(KvShape shape, int blockTokens, int queryChunk)
{
    [ThreadStatic] private static AttentionScratch? _cached;
    private readonly (int, int, int, int) _key = (shape.GroupSize, shape.HeadDim, blockTokens, queryChunk);

    public static AttentionScratch For(KvShape shape, int blockTokens, int queryChunk)
    {
        var c = _cached;
        if (c == null || c._key != (shape.GroupSize, shape.HeadDim, blockTokens, queryChunk))
            _cached = c = new AttentionScratch(shape, blockTokens, queryChunk);
        return c;
    }

    public readonly float[] Q = new float[shape.GroupSize * queryChunk * shape.HeadDim];
    public readonly float[] Acc = new float[shape.GroupSize * queryChunk * shape.HeadDim];
    public readonly float[] Max = new float[shape.GroupSize * queryChunk];
    public readonly float[] Sum = new float[shape.GroupSize * queryChunk];
    public readonly float[] Scores = new float[shape.GroupSize * queryChunk * blockTokens];
    public readonly float[] Tile = new float[blockTokens * shape.HeadDim];
    // Offloaded attention: chosen block indices, and the selector's per-block bounds and sort order (grown on demand).
    public int[] Chosen = [];
    public float[] Bounds = [];
    public int[] Order = [];

    public void EnsureBlocks(int blocks)
    {
        if (Chosen.Length >= blocks) return;
        int n = Math.Max(blocks, Chosen.Length * 2);
        Chosen = new int[n];
        Bounds = new float[n];
        Order = new int[n];
    }
}
