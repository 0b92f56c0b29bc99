using Kvq.Tensors;

namespace Kvq.Model;

/// <summary>One transformer block's weights. Matrices are (out, in) row-major: y = W x.</summary>
public sealed class LayerWeights
{
    public required float[] AttnNorm { get; init; }    // (dim)
    public required WeightMatrix Wq { get; init; }     // (heads*headDim, dim)
    public required WeightMatrix Wk { get; init; }     // (kvHeads*headDim, dim)
    public required WeightMatrix Wv { get; init; }     // (kvHeads*headDim, dim)
    public required WeightMatrix Wo { get; init; }     // (dim, heads*headDim)
    public float[]? Bq { get; init; }                  // (heads*headDim) qwen2 only
    public float[]? Bk { get; init; }                  // (kvHeads*headDim)
    public float[]? Bv { get; init; }                  // (kvHeads*headDim)
    public float[]? QNorm { get; init; }               // (headDim) per-head RMSNorm of queries before RoPE (QK-norm)
    public float[]? KNorm { get; init; }               // (headDim) per-head RMSNorm of keys before RoPE; the cache gets normed keys
    public required float[] FfnNorm { get; init; }     // (dim)
    public required WeightMatrix WGate { get; init; }  // (ffn, dim)  "w1"
    public required WeightMatrix WUp { get; init; }    // (ffn, dim)  "w3"
    public required WeightMatrix WDown { get; init; }  // (dim, ffn)  "w2"
}
