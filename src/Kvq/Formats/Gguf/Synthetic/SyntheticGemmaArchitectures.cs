using static Kvq.Formats.Gguf.Synthetic.SyntheticTensor;

namespace Kvq.Formats.Gguf.Synthetic;

/// <summary>
/// Gemma 2, Gemma 3 and Qwen3-MoE with llama.cpp's tensor names (llama-arch.cpp): Gemma's sandwich norms
/// (post_attention_norm, post_ffw_norm), its output tied to token_embd (llama.cpp never reads an output.weight for
/// Gemma), Gemma 3's QK-norm; Qwen3-MoE's QK-norm and stacked experts without a shared one.
/// </summary>
public static class SyntheticGemmaArchitectures
{
    /// <summary>token_embd (also the output) and output_norm. Gemma's tied output makes logits = E . norm(h): catalog
    /// entries give the embeddings a small gain (<see cref="SyntheticModelSpec.EmbeddingGain"/>), so that the
    /// sub-blocks' post-normed outputs rather than each token's own embedding (scaled by sqrt(dim) on input) make up
    /// the residual stream (else every token predicts itself), and a large output-norm centre
    /// (<see cref="SyntheticModelSpec.OutputNormCenter"/>) to make the logits peaked.</summary>
    private static IEnumerable<SyntheticTensor> GemmaGlobals(SyntheticModelSpec s)
    {
        yield return Embedding("token_embd.weight", s.Dim, s.Vocabulary.Count, s.EmbeddingGain);
        yield return Norm("output_norm.weight", s.Dim) with { NormCenter = s.OutputNormCenter };
    }

    private static IEnumerable<SyntheticTensor> GemmaLayer(SyntheticModelSpec s, int l, bool qkNorm)
    {
        string p = $"blk.{l}.";
        yield return Norm(p + "attn_norm.weight", s.Dim);
        yield return Matrix(p + "attn_q.weight", s.Dim, s.QDim);
        yield return Matrix(p + "attn_k.weight", s.Dim, s.KvDim);
        yield return Matrix(p + "attn_v.weight", s.Dim, s.KvDim);
        if (qkNorm)
            foreach (var t in SyntheticArchitectures.QkNorm(s, l)) yield return t;
        yield return Matrix(p + "attn_output.weight", s.QDim, s.Dim);
        yield return Norm(p + "post_attention_norm.weight", s.Dim);
        yield return Norm(p + "ffn_norm.weight", s.Dim);
        yield return Matrix(p + "ffn_gate.weight", s.Dim, s.FfnDim);
        yield return Matrix(p + "ffn_up.weight", s.Dim, s.FfnDim);
        yield return Matrix(p + "ffn_down.weight", s.FfnDim, s.Dim);
        yield return Norm(p + "post_ffw_norm.weight", s.Dim);
    }

    private static IEnumerable<SyntheticMetadata> Window(SyntheticModelSpec s) =>
        s.SlidingWindow > 0 ? [SyntheticMetadata.U32(s.Key("attention.sliding_window"), s.SlidingWindow)] : [];

    /// <summary>Gemma 2: GeGLU, post-norms, embedding scale, sliding window on every other layer (llama.cpp's default
    /// period 2), attention and final-logit soft-caps (catalog entries give them as metadata).</summary>
    public static readonly SyntheticArchitecture Gemma2 = new()
    {
        Name = "gemma2",
        Metadata = Window,
        GlobalTensors = GemmaGlobals,
        LayerTensors = (s, l) => GemmaLayer(s, l, qkNorm: false),
    };

    /// <summary>Gemma 3: as Gemma 2 without soft-caps, plus QK-norm; five sliding layers then one global (period 6),
    /// sliding layers with RoPE base 10000 (llama.cpp's default when rope.freq_base_swa is absent).</summary>
    public static readonly SyntheticArchitecture Gemma3 = new()
    {
        Name = "gemma3",
        Metadata = Window,
        GlobalTensors = GemmaGlobals,
        LayerTensors = (s, l) => GemmaLayer(s, l, qkNorm: true),
    };

    /// <summary>Qwen3-MoE: neox RoPE, QK-norm, experts of width expert_feed_forward_length, top-k weights renormalised,
    /// no shared expert.</summary>
    public static readonly SyntheticArchitecture Qwen3Moe = new()
    {
        Name = "qwen3moe",
        Metadata = s => SyntheticFamilyArchitectures.ExpertCounts(s).Append(SyntheticMetadata.U32(s.Key("expert_feed_forward_length"), s.ExpertFfnDim)),
        GlobalTensors = SyntheticArchitectures.EmbeddingAndOutput,
        LayerTensors = (s, l) => SyntheticArchitectures.Attention(s, l)
            .Concat(SyntheticArchitectures.QkNorm(s, l))
            .Append(Norm($"blk.{l}.ffn_norm.weight", s.Dim))
            .Concat(SyntheticFamilyArchitectures.Experts(s, l, s.ExpertFfnDim)),
    };
}
