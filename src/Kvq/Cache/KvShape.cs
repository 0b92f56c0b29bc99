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

    /// <summary>RoPE of each layer where layers differ (Gemma 3's sliding layers use another base); null: <see cref="Rope"/> everywhere.</summary>
    public Rope[]? LayerRopes { get; init; }

    /// <summary>The RoPE that rotates keys and queries of <paramref name="layer"/>.</summary>
    public Rope RopeOf(int layer) => LayerRopes?[layer] ?? Rope;

    /// <summary>Attention scores become cap * tanh(score / cap) before the mask and softmax (Gemma 2); 0: none.</summary>
    public float AttnSoftCap { get; init; }
}
