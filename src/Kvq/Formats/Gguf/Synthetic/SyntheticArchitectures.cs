using static Kvq.Formats.Gguf.Synthetic.SyntheticTensor;

namespace Kvq.Formats.Gguf.Synthetic;

/// <summary>
/// The architectures <see cref="SyntheticModelWriter"/> can write, with llama.cpp's tensor names (llama-arch.cpp) and
/// the parts they share: embeddings and output, the attention projections, the SwiGLU feed-forward.
/// </summary>
public static class SyntheticArchitectures
{
    /// <summary>token_embd, output_norm and (unless tied) output.</summary>
    public static IEnumerable<SyntheticTensor> EmbeddingAndOutput(SyntheticModelSpec s)
    {
        yield return Embedding("token_embd.weight", s.Dim, s.Vocabulary.Count, s.EmbeddingGain);
        yield return Norm("output_norm.weight", s.Dim) with { NormCenter = s.OutputNormCenter };
        if (!s.TiedOutput)
            yield return Matrix("output.weight", s.Dim, s.Vocabulary.Count, s.OutputGain) with { Echo = "token_embd.weight", EchoGain = s.OutputEcho };
    }

    /// <summary>attn_norm, q/k/v (with biases when the spec asks), attn_output.</summary>
    public static IEnumerable<SyntheticTensor> Attention(SyntheticModelSpec s, int layer)
    {
        string p = $"blk.{layer}.";
        yield return Norm(p + "attn_norm.weight", s.Dim);
        yield return Matrix(p + "attn_q.weight", s.Dim, s.QDim);
        yield return Matrix(p + "attn_k.weight", s.Dim, s.KvDim);
        yield return Matrix(p + "attn_v.weight", s.Dim, s.KvDim);
        if (s.QkvBiases)
        {
            yield return Bias(p + "attn_q.bias", s.QDim);
            yield return Bias(p + "attn_k.bias", s.KvDim);
            yield return Bias(p + "attn_v.bias", s.KvDim);
        }
        yield return Matrix(p + "attn_output.weight", s.QDim, s.Dim);
    }

    /// <summary>Per-head RMSNorm weights of queries and keys (Qwen3, Gemma 3), applied before RoPE.</summary>
    public static IEnumerable<SyntheticTensor> QkNorm(SyntheticModelSpec s, int layer)
    {
        yield return Norm($"blk.{layer}.attn_q_norm.weight", s.HeadWidth);
        yield return Norm($"blk.{layer}.attn_k_norm.weight", s.HeadWidth);
    }

    /// <summary>ffn_norm and the SwiGLU matrices gate, up, down.</summary>
    public static IEnumerable<SyntheticTensor> SwiGlu(SyntheticModelSpec s, int layer)
    {
        string p = $"blk.{layer}.";
        yield return Norm(p + "ffn_norm.weight", s.Dim);
        yield return Matrix(p + "ffn_gate.weight", s.Dim, s.FfnDim);
        yield return Matrix(p + "ffn_up.weight", s.Dim, s.FfnDim);
        yield return Matrix(p + "ffn_down.weight", s.FfnDim, s.Dim);
    }

    /// <summary>Llama 1/2/3, Mistral 7B (llama.cpp names Mistral GGUFs "llama"): adjacent-pair RoPE.</summary>
    public static readonly SyntheticArchitecture Llama = new()
    {
        Name = "llama",
        GlobalTensors = EmbeddingAndOutput,
        LayerTensors = (s, l) => Attention(s, l).Concat(SwiGlu(s, l)),
    };

    /// <summary>Qwen2 / Qwen2.5: neox RoPE, q/k/v biases.</summary>
    public static readonly SyntheticArchitecture Qwen2 = new()
    {
        Name = "qwen2",
        GlobalTensors = EmbeddingAndOutput,
        LayerTensors = (s, l) => Attention(s, l).Concat(SwiGlu(s, l)),
    };

    /// <summary>Qwen3: neox RoPE, per-head RMSNorm of q and k before RoPE, no biases.</summary>
    public static readonly SyntheticArchitecture Qwen3 = new()
    {
        Name = "qwen3",
        GlobalTensors = EmbeddingAndOutput,
        LayerTensors = (s, l) => Attention(s, l).Concat(QkNorm(s, l)).Concat(SwiGlu(s, l)),
    };

    /// <summary>Mistral with its sliding window in {arch}.attention.sliding_window (Kvq's "mistral"; llama.cpp names
    /// Mistral GGUFs "llama" and runs them with full attention).</summary>
    public static readonly SyntheticArchitecture Mistral = new()
    {
        Name = "mistral",
        LlamaCppRuns = false,
        Metadata = s => s.SlidingWindow > 0 ? [SyntheticMetadata.U32(s.Key("attention.sliding_window"), s.SlidingWindow)] : [],
        GlobalTensors = EmbeddingAndOutput,
        LayerTensors = (s, l) => Attention(s, l).Concat(SwiGlu(s, l)),
    };

    private static readonly Dictionary<string, SyntheticArchitecture> Registry = new(StringComparer.Ordinal);

    static SyntheticArchitectures()
    {
        foreach (var a in new[] { Llama, Qwen2, Qwen3, Mistral }) Register(a);
        // Mixtral is a llama file (same name), so only its catalog entry refers to it.
        foreach (var a in new[] { SyntheticFamilyArchitectures.Phi3, SyntheticFamilyArchitectures.Qwen2Moe }) Register(a);
        foreach (var a in new[] { SyntheticGemmaArchitectures.Gemma2, SyntheticGemmaArchitectures.Gemma3, SyntheticGemmaArchitectures.Qwen3Moe }) Register(a);
    }

    /// <summary>Adds an architecture (by its general.architecture name) to the registry.</summary>
    public static void Register(SyntheticArchitecture a)
    {
        lock (Registry) Registry[a.Name] = a;
    }

    public static SyntheticArchitecture Get(string name)
    {
        lock (Registry)
            return Registry.TryGetValue(name, out var a) ? a
                : throw new ArgumentException($"no synthetic architecture '{name}' (known: {string.Join(", ", Registry.Keys.Order())})");
    }

    public static IReadOnlyList<string> Names
    {
        get { lock (Registry) return Registry.Keys.Order().ToList(); }
    }
}
