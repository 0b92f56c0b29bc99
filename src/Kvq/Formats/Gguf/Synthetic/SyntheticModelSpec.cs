using Kvq.Tensors;

namespace Kvq.Formats.Gguf.Synthetic;

/// <summary>
/// The shape and contents of one small random-weight GGUF. Sizes default to a model that llama.cpp and Kvq both run
/// in milliseconds; every matrix width is a multiple of 32 so that any block-quantized weight type can be written.
/// </summary>
public sealed record SyntheticModelSpec
{
    /// <summary>File stem and general.name, e.g. "llama3-gqa".</summary>
    public required string Name { get; init; }
    public required SyntheticArchitecture Architecture { get; init; }
    public required SyntheticVocabulary Vocabulary { get; init; }
    public int Dim { get; init; } = 128;
    public int Layers { get; init; } = 2;
    public int Heads { get; init; } = 4;
    public int KvHeads { get; init; } = 2;
    /// <summary>Head width; 0 means Dim / Heads. Written as attention.key_length/value_length when it differs.</summary>
    public int HeadDim { get; init; }
    public int FfnDim { get; init; } = 256;
    public int ContextLength { get; init; } = 4096;
    public float NormEps { get; init; } = 1e-5f;
    public float RopeBase { get; init; } = 10000f;
    /// <summary>Rotated dims per head; 0 means all of them.</summary>
    public int RopeDims { get; init; }
    /// <summary>Output projection absent (llama.cpp ties it to token_embd.weight).</summary>
    public bool TiedOutput { get; init; }
    /// <summary>q/k/v biases (qwen2).</summary>
    public bool QkvBiases { get; init; }
    /// <summary>Sliding attention window in tokens (0: none), for architectures that read one.</summary>
    public int SlidingWindow { get; init; }
    /// <summary>Mixture-of-experts sizes (0: dense), for architectures that read them.</summary>
    public int Experts { get; init; }
    public int ExpertsUsed { get; init; }
    public int ExpertFfnDim { get; init; }
    /// <summary>Type of the weight matrices whose rows fit its blocks (others, norms and biases stay f32).</summary>
    public GgmlType WeightType { get; init; } = GgmlType.F32;
    /// <summary>Scale of the output logits (multiplies the output matrix's gain): larger makes the next-token
    /// distribution more peaked, so that top-1 comparisons are not decided by near-ties.</summary>
    public float OutputGain { get; init; } = 6f;
    /// <summary>Gain of the embedding rows (permuted) added to the output matrix: each token's own embedding then
    /// votes for one successor (see <see cref="SyntheticTensor.Echo"/>); 0: none.</summary>
    public float OutputEcho { get; init; } = 16f;
    /// <summary>Gain of the embedding table's values (uniform +- gain).</summary>
    public float EmbeddingGain { get; init; } = 1f;
    /// <summary>Centre of output_norm's weights: with a tied output (Gemma) it sets the logits' scale.</summary>
    public float OutputNormCenter { get; init; } = 1f;
    public int Seed { get; init; } = 1;
    /// <summary>Keys added after the shared and architecture ones (RoPE scaling, chat template, ...).</summary>
    public IReadOnlyList<SyntheticMetadata> ExtraMetadata { get; init; } = [];
    /// <summary>Tensors added after the architecture's (e.g. rope_freqs.weight of a Llama 3.1 file).</summary>
    public IReadOnlyList<SyntheticTensor> ExtraTensors { get; init; } = [];

    public int HeadWidth => HeadDim > 0 ? HeadDim : Dim / Heads;
    public int RotaryDims => RopeDims > 0 ? RopeDims : HeadWidth;
    public int QDim => Heads * HeadWidth;
    public int KvDim => KvHeads * HeadWidth;
    public string Arch => Architecture.Name;
    /// <summary>"{arch}.{key}".</summary>
    public string Key(string key) => $"{Arch}.{key}";
}
