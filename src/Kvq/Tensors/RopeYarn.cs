namespace Kvq.Tensors;

/// <summary>
/// YaRN RoPE scaling (Peng et al. 2023) as llama.cpp applies it (ggml's rope_yarn): each pair's angle mixes the
/// interpolated angle (position / <see cref="Factor"/>) and the original one by a ramp over the pair index between the
/// correction dims of <see cref="BetaFast"/> and <see cref="BetaSlow"/>, and cos/sin are scaled by
/// <see cref="Magnitude"/> on queries and keys alike (so attention scores by its square).
/// </summary>
public sealed record RopeYarn
{
    /// <summary>Context extension factor (GGUF rope.scaling.factor); angles are divided by it where interpolated.</summary>
    public required float Factor { get; init; }
    /// <summary>Context the model was trained on before extension (rope.scaling.original_context_length).</summary>
    public required int OriginalContext { get; init; }
    /// <summary>Weight of the extrapolated angle in the ramp's mix (llama.cpp yarn_ext_factor; 1 for YaRN files).</summary>
    public float ExtFactor { get; init; } = 1f;
    public float BetaFast { get; init; } = 32f;
    public float BetaSlow { get; init; } = 1f;
    /// <summary>llama.cpp's yarn_attn_factor as the context computes it (before ggml multiplies in 1 + 0.1 ln factor).</summary>
    public float AttnFactor { get; init; } = 1f;

    /// <summary>What cos and sin are multiplied by (ggml's mscale): AttnFactor (1 + 0.1 ln Factor) when ExtFactor != 0.</summary>
    public float Magnitude => ExtFactor != 0 ? AttnFactor * (1.0f + 0.1f * MathF.Log(Factor)) : AttnFactor;

    /// <summary>ggml_rope_yarn_corr_dims: the pair range [low, high] over which the ramp goes from extrapolation to interpolation.</summary>
    public (float Low, float High) CorrectionDims(int ropeDims, float ropeBase)
    {
        float CorrDim(float rotations) => ropeDims * MathF.Log(OriginalContext / (rotations * 2 * MathF.PI)) / (2 * MathF.Log(ropeBase));
        float start = MathF.Floor(CorrDim(BetaFast));
        float end = MathF.Ceiling(CorrDim(BetaSlow));
        return (MathF.Max(0, start), MathF.Min(ropeDims - 1, end));
    }
}
