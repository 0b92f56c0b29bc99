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
    public float[]? AttnPostNorm { get; init; }        // (dim) RMSNorm of the attention output before the residual add (Gemma)
    public float[]? FfnPostNorm { get; init; }         // (dim) RMSNorm of the feed-forward output before the residual add
    // The dense SwiGLU feed-forward; null in a mixture-of-experts layer (then Experts holds it).
    public WeightMatrix? WGate { get; init; }          // (ffn, dim)  "w1"
    public WeightMatrix? WUp { get; init; }            // (ffn, dim)  "w3"
    public WeightMatrix? WDown { get; init; }          // (dim, ffn)  "w2"
    public Experts.ExpertWeights? Experts { get; init; }

    /// <summary>The dense feed-forward's matrices, or a typed error naming the <paramref name="consumer"/> that needs
    /// them (the CUDA backend and the calibration's backward pass have no mixture-of-experts path).</summary>
    public (WeightMatrix Gate, WeightMatrix Up, WeightMatrix Down) DenseFfn(string consumer) =>
        WGate != null && WUp != null && WDown != null ? (WGate, WUp, WDown)
            : throw new UnsupportedArchitectureException($"{consumer} has no mixture-of-experts feed-forward; this layer routes its tokens to experts");

    /// <summary>Every matrix of the layer (attention, dense or expert feed-forward).</summary>
    public IEnumerable<WeightMatrix> Matrices
    {
        get
        {
            foreach (var m in new[] { Wq, Wk, Wv, Wo, WGate, WUp, WDown }) if (m != null) yield return m;
            if (Experts != null) foreach (var m in Experts.Matrices) yield return m;
        }
    }

    /// <summary>Floats held outside the matrices (norms, QK-norms, biases, the shared expert's gate vector).</summary>
    public long VectorFloats => AttnNorm.Length + FfnNorm.Length + (Bq?.Length ?? 0) + (Bk?.Length ?? 0) + (Bv?.Length ?? 0)
                                + (QNorm?.Length ?? 0) + (KNorm?.Length ?? 0)
                                + (AttnPostNorm?.Length ?? 0) + (FfnPostNorm?.Length ?? 0) + (Experts?.SharedGateInput?.Length ?? 0);
}
