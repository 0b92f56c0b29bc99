using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Cache;

/// <summary>The geometry of a model's KV cache: layers x KV heads x head dim, query heads per KV head, and RoPE.</summary>
public sealed record KvShape(int Layers, int KvHeads, int Heads, int HeadDim, Rope Rope)
{
    public int KvDim => KvHeads * HeadDim;
    public int QDim => Heads * HeadDim;
    public int GroupSize => Heads / KvHeads;
    public float ScoreScale => 1f / MathF.Sqrt(HeadDim);

    public static KvShape For(ModelConfig c) => new(c.Layers, c.KvHeads, c.Heads, c.HeadDim, Rope.For(c));
}
