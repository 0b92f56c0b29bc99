namespace Kvq.Model;

/// <summary>The feed-forward's gated activation: SwiGLU silu(gate) * up (Llama, Qwen, Mistral, Phi) or GeGLU
/// gelu(gate) * up with GELU's tanh approximation (Gemma).</summary>
public enum FfnActivation
{
    Silu,
    GeluTanh,
}

/// <summary>
/// Parts of a Gemma 2 / Gemma 3 decoder beyond a Llama one (llama.cpp's gemma2 and gemma3 graphs): embeddings scaled by
/// sqrt(dim), GeGLU, a second RMSNorm after each sub-block (attn_post_norm, ffn_post_norm, "sandwich" norms), queries
/// scaled by <see cref="AttentionScale"/> instead of 1/sqrt(head dim) (query_pre_attn_scalar), and tanh soft-capping
/// of the attention scores and of the final logits (cap * tanh(x / cap); Gemma 2). Gemma's RMSNorm multiplies by
/// (1 + w); GGUF converters store 1 + w, so the norms themselves are ordinary.
/// </summary>
public sealed record DecoderExtras
{
    /// <summary>Factor on the embedding rows (Gemma: sqrt(dim)); 1: none.</summary>
    public float EmbeddingScale { get; init; } = 1f;
    public FfnActivation Activation { get; init; } = FfnActivation.Silu;
    /// <summary>RMSNorm of each sub-block's output before the residual add (weights in LayerWeights.AttnPostNorm/FfnPostNorm).</summary>
    public bool PostNorms { get; init; }
    /// <summary>Scale of q.k in the attention scores; 0: 1/sqrt(head dim). The model multiplies it into its queries
    /// (relative to the cache's 1/sqrt(head dim)).</summary>
    public float AttentionScale { get; init; }
    /// <summary>Attention scores become cap * tanh(score / cap) before the mask and softmax; 0: none.</summary>
    public float AttnSoftCap { get; init; }
    /// <summary>Logits become cap * tanh(logit / cap); 0: none.</summary>
    public float FinalSoftCap { get; init; }

    public IEnumerable<string> Features()
    {
        if (EmbeddingScale != 1f) yield return $"embedding scale {EmbeddingScale}";
        if (Activation != FfnActivation.Silu) yield return $"{Activation} feed-forward";
        if (PostNorms) yield return "post-norms";
        if (AttentionScale > 0) yield return $"attention scale {AttentionScale}";
        if (AttnSoftCap > 0) yield return $"attention soft-capping ({AttnSoftCap})";
        if (FinalSoftCap > 0) yield return $"final logit soft-capping ({FinalSoftCap})";
    }

    public void Validate(string source)
    {
        void Check(bool ok, string what)
        {
            if (!ok) throw new Formats.ModelFormatException(source, "hyper-parameters", 0, what);
        }
        Check(EmbeddingScale > 0 && float.IsFinite(EmbeddingScale), $"embedding scale {EmbeddingScale} must be positive");
        Check(AttentionScale >= 0 && float.IsFinite(AttentionScale), $"attention scale {AttentionScale} must not be negative");
        Check(AttnSoftCap >= 0 && float.IsFinite(AttnSoftCap), $"attention soft-cap {AttnSoftCap} must not be negative");
        Check(FinalSoftCap >= 0 && float.IsFinite(FinalSoftCap), $"final logit soft-cap {FinalSoftCap} must not be negative");
    }

    /// <summary>x = cap * tanh(x / cap) in place (cap 0: unchanged).</summary>
    public static void SoftCap(Span<float> x, float cap) => Tensors.Kernels.SoftCap(x, cap);

    /// <summary>gate = gelu(gate) * up with GELU's tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).</summary>
    public static void GeGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        for (int i = 0; i < gate.Length; i++) gate[i] = Gelu(gate[i]) * up[i];
    }

    public const float GeluC = 0.7978845608028654f;   // sqrt(2 / pi)
    public const float GeluA = 0.044715f;

    public static float Gelu(float x) => 0.5f * x * (1f + MathF.Tanh(GeluC * (x + GeluA * x * x * x)));

    /// <summary>d gelu / dx.</summary>
    public static float GeluDerivative(float x)
    {
        float u = GeluC * (x + GeluA * x * x * x), t = MathF.Tanh(u);
        return 0.5f * (1f + t) + 0.5f * x * (1f - t * t) * GeluC * (1f + 3f * GeluA * x * x);
    }
}
