using Kvq.Tensors;

namespace Kvq.Cache;

/// <summary>The geometry of a model's KV cache: layers x KV heads x head dim, query heads per KV head, and RoPE.</summary>
public sealed record KvShape(int Layers, int KvHeads, int Heads, int HeadDim, Rope Rope)
{
    public int KvDim => KvHeads * HeadDim;
    public int QDim => Heads * HeadDim;
    public int GroupSize => Heads / KvHeads;
    public float ScoreScale => 1f / MathF.Sqrt(HeadDim);

    /// <summary>Sliding attention window per layer in tokens (0: the whole context); null: no layer slides.</summary>
    public int[]? LayerWindows { get; init; }

    /// <summary>How many of the latest stored tokens a query of <paramref name="layer"/> sees, itself included (0: all).</summary>
    public int WindowOf(int layer) => LayerWindows?[layer] ?? 0;
}
