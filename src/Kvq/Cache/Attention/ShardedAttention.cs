using Kvq.Tensors;

namespace Kvq.Cache.Attention;

/// <summary>
/// Sequence-parallel attention on the CPU, the reference of the multi-GPU path (docs/multigpu.md): a layer's blocks cut
/// into N contiguous shards (as N GPUs would hold them), each shard's partial states computed by the one block loop
/// (<see cref="BlockAttention.AttendRange"/>) as if it were alone, then merged by <see cref="AttentionStates.Combine(Span{float})"/>.
/// Equal to the unsharded <see cref="BlockAttention.Attend"/> up to float rounding.
/// </summary>
internal static class ShardedAttention
{
    /// <summary>output (n, qDim) = attention of q (n, qDim) over the layer's stored tokens, shard s being blocks
    /// [<paramref name="bounds"/>[s], <paramref name="bounds"/>[s + 1]) (bounds ascending, from 0 to at least the
    /// layer's block count; shards may be empty or of unequal length). Returns the shards' states (for inspection).</summary>
    public static AttentionStates Attend(IKvBlockReader kv, int layer, ReadOnlySpan<float> q, int n, ReadOnlySpan<int> bounds, Span<float> output,
        Parallelism par)
    {
        var shape = kv.Shape;
        int shards = bounds.Length - 1;
        int blocks = (kv.Count(layer) + kv.BlockTokens - 1) / kv.BlockTokens;
        if (shards < 1 || bounds[0] != 0 || bounds[^1] < blocks)
            throw new ArgumentException($"shard bounds must run from block 0 to at least block {blocks} (the layer's blocks): got [{string.Join(", ", bounds.ToArray())}]", nameof(bounds));
        for (int s = 0; s < shards; s++)
            if (bounds[s + 1] < bounds[s]) throw new ArgumentException($"shard bounds must ascend: [{string.Join(", ", bounds.ToArray())}]", nameof(bounds));
        var states = new AttentionStates(shards, n * shape.Heads, shape.HeadDim);
        for (int s = 0; s < shards; s++)
            BlockAttention.AttendRange(kv, layer, q, n, bounds[s], Math.Min(bounds[s + 1], blocks), states, s, par);
        states.Combine(output);
        return states;
    }

    /// <summary>Bounds of <paramref name="shards"/> contiguous shards of <paramref name="blocks"/> blocks, as equal as
    /// whole blocks allow (the first ones one block longer).</summary>
    public static int[] EvenBounds(int blocks, int shards)
    {
        var b = new int[shards + 1];
        for (int s = 1; s <= shards; s++) b[s] = (int)((long)blocks * s / shards);
        return b;
    }
}
