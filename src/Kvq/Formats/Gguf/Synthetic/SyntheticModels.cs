using Kvq.Tensors;

namespace Kvq.Formats.Gguf.Synthetic;

/// <summary>
/// The named synthetic models tests and `dev/models` write: one or more per architecture, each a small spec over
/// <see cref="SyntheticArchitectures"/>. A name is also the file stem. <see cref="Create"/> fills in the vocabulary and
/// the weight type; entries that need a particular vocabulary type take it from <see cref="SyntheticVocabularies"/>.
/// </summary>
public static class SyntheticModels
{
    private static readonly List<(string Name, Func<SyntheticVocabularies, SyntheticModelSpec> Make)> Entries =
    [
        // GQA 2:1, untied, as Llama 2 / Mistral 7B files (llama.cpp names Mistral GGUFs "llama").
        ("llama", v => new SyntheticModelSpec { Name = "llama", Architecture = SyntheticArchitectures.Llama, Vocabulary = v.SentencePiece, Seed = 11 }),
        // Qwen2.5: neox RoPE, q/k/v biases, large RoPE base (tied output: TinyModelsVsLlamaCppTests; tied to random
        // embeddings, every token would predict itself).
        ("qwen2", v => new SyntheticModelSpec
        {
            Name = "qwen2", Architecture = SyntheticArchitectures.Qwen2, Vocabulary = v.SentencePiece, Seed = 12,
            QkvBiases = true, RopeBase = 1000000f,
        }),
        // Qwen3: QK-norm; 8 heads of 32 over a width of 128 (q is wider than the model, as in Qwen3-0.6B), GQA 4:1.
        ("qwen3", v => new SyntheticModelSpec
        {
            Name = "qwen3", Architecture = SyntheticArchitectures.Qwen3, Vocabulary = v.SentencePiece, Seed = 13,
            HeadDim = 32, Heads = 8, KvHeads = 2, RopeBase = 1000000f,
        }),
        // Llama 3.x: GQA 4:1, head width 32, RoPE base 500000 and Llama 3.1's frequency factors in rope_freqs.weight. The
        // factors are computed for an original context of 64 tokens (8192 in the real model) so that the blend and the
        // slowed pairs are reached within a test's few hundred positions.
        ("llama3", v => new SyntheticModelSpec
        {
            Name = "llama3", Architecture = SyntheticArchitectures.Llama, Vocabulary = v.SentencePiece, Seed = 14,
            Heads = 4, KvHeads = 1, RopeBase = 500000f,
            ExtraTensors = [SyntheticTensor.Exact("rope_freqs.weight", RopeFrequencyFactors.Llama3(32, 500000f, 8f, 1f, 4f, 64))],
        }),
        // Qwen2.5 with YaRN (rope.scaling.type yarn, factor 4) over an original context of 64 tokens, as its long-context
        // GGUFs do over 32768.
        ("qwen2-yarn", v => new SyntheticModelSpec
        {
            Name = "qwen2-yarn", Architecture = SyntheticArchitectures.Qwen2, Vocabulary = v.SentencePiece, Seed = 15,
            QkvBiases = true, RopeBase = 1000000f, KvHeads = 1,
            ExtraMetadata =
            [
                SyntheticMetadata.Str("qwen2.rope.scaling.type", "yarn"),
                SyntheticMetadata.F32("qwen2.rope.scaling.factor", 4f),
                SyntheticMetadata.U32("qwen2.rope.scaling.original_context_length", 64),
            ],
        }),
        // Linear RoPE scaling (rope.scaling.type linear, factor 4: positions divided by 4), as older long-context Llama
        // fine-tunes state it; llama.cpp reads it as freq_scale 1/4.
        ("llama-linear", v => new SyntheticModelSpec
        {
            Name = "llama-linear", Architecture = SyntheticArchitectures.Llama, Vocabulary = v.SentencePiece, Seed = 16,
            ExtraMetadata =
            [
                SyntheticMetadata.Str("llama.rope.scaling.type", "linear"),
                SyntheticMetadata.F32("llama.rope.scaling.factor", 4f),
            ],
        }),
        // Mistral with a 32-token sliding window on every layer. llama.cpp has no "mistral" architecture (it runs Mistral
        // GGUFs as "llama", with full attention), so this one is checked against Kvq's own references.
        ("mistral-swa", v => new SyntheticModelSpec
        {
            Name = "mistral-swa", Architecture = SyntheticArchitectures.Mistral, Vocabulary = v.SentencePiece, Seed = 17,
            SlidingWindow = 32,
        }),
        // Phi-3: fused q|k|v and gate|up, neox RoPE, MHA as Phi-3-mini.
        ("phi3", v => new SyntheticModelSpec
        {
            Name = "phi3", Architecture = SyntheticFamilyArchitectures.Phi3, Seed = 21,
            Vocabulary = new SpecialTokensVocabulary(v.SentencePiece, ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]),
            KvHeads = 4, FfnDim = 96,
        }),
        // Mixtral: 4 experts of width 64, 2 per token, GQA 2:1.
        ("mixtral", v => new SyntheticModelSpec
        {
            Name = "mixtral", Architecture = SyntheticFamilyArchitectures.Mixtral, Vocabulary = v.SentencePiece, Seed = 22,
            FfnDim = 64, Experts = 4, ExpertsUsed = 2, RopeBase = 1000000f,
        }),
        // Qwen2-MoE: 6 experts of width 32, 2 per token, shared expert of width 96, q/k/v biases.
        ("qwen2moe", v => new SyntheticModelSpec
        {
            Name = "qwen2moe", Architecture = SyntheticFamilyArchitectures.Qwen2Moe, Vocabulary = v.SentencePiece, Seed = 23,
            FfnDim = 96, Experts = 6, ExpertsUsed = 2, ExpertFfnDim = 32, QkvBiases = true, RopeBase = 1000000f,
        }),
        // Phi-3 rotating only the first half of each head (rope.dimension_count 16 of head width 32, as Phi-2-style
        // partial rotary files do); llama.cpp's phi3 graph rotates n_rot dims and passes the rest through.
        ("phi3-partial", v => new SyntheticModelSpec
        {
            Name = "phi3-partial", Architecture = SyntheticFamilyArchitectures.Phi3, Seed = 24,
            Vocabulary = new SpecialTokensVocabulary(v.SentencePiece, ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]),
            KvHeads = 4, FfnDim = 96, RopeDims = 16,
        }),
        // Qwen3-MoE: QK-norm, 8 heads of 32 (GQA 4:1), 8 experts of width 32, 2 per token, renormalised, no shared expert.
        ("qwen3moe", v => new SyntheticModelSpec
        {
            Name = "qwen3moe", Architecture = SyntheticGemmaArchitectures.Qwen3Moe, Vocabulary = v.SentencePiece, Seed = 25,
            HeadDim = 32, Heads = 8, KvHeads = 2, FfnDim = 96, Experts = 8, ExpertsUsed = 2, ExpertFfnDim = 32, RopeBase = 1000000f,
        }),
        // Gemma 2: layer 0 slides over 32 tokens, layer 1 is global (period 2); soft-caps small enough to bend this
        // random model's scores and logits (Gemma 2's own are 50 and 30); tied output; norm epsilon 1e-6.
        ("gemma2", v => new SyntheticModelSpec
        {
            Name = "gemma2", Architecture = SyntheticGemmaArchitectures.Gemma2, Vocabulary = v.SentencePiece, Seed = 31,
            TiedOutput = true, SlidingWindow = 32, NormEps = 1e-6f, EmbeddingGain = 0.03f, OutputNormCenter = 40f,
            ExtraMetadata =
            [
                SyntheticMetadata.F32("gemma2.attn_logit_softcapping", 3f),
                SyntheticMetadata.F32("gemma2.final_logit_softcapping", 20f),
            ],
        }),
        // Gemma 3: 6 layers (5 sliding over 32 tokens with RoPE base 10000, then 1 global with base 1e6), QK-norm, heads of
        // 64 over a width of 128 (q wider than the model, key_length written), GQA 2:1, tied output.
        ("gemma3", v => new SyntheticModelSpec
        {
            Name = "gemma3", Architecture = SyntheticGemmaArchitectures.Gemma3, Vocabulary = v.SentencePiece, Seed = 32,
            TiedOutput = true, EmbeddingGain = 0.03f, OutputNormCenter = 40f, Layers = 6, HeadDim = 64, Heads = 4, KvHeads = 2, SlidingWindow = 32, RopeBase = 1000000f, NormEps = 1e-6f,
        }),
    ];

    public static IReadOnlyList<string> Names => Entries.Select(e => e.Name).ToList();

    /// <summary>The models whose architecture llama.cpp runs (the ones compared with it).</summary>
    public static IReadOnlyList<string> LlamaCppNames => Entries.Where(e => LlamaCppRuns(e.Name)).Select(e => e.Name).ToList();

    private static bool LlamaCppRuns(string name) =>
        Create(name, new SyntheticVocabularies(new EmptyVocabulary())).Architecture.LlamaCppRuns;

    /// <summary>Stands in for a vocabulary where only the spec's architecture is wanted.</summary>
    private sealed class EmptyVocabulary : SyntheticVocabulary
    {
        public override int Count => 0;
        public override IEnumerable<SyntheticMetadata> Metadata() => [];
    }

    /// <summary>Adds a named model (replacing one of the same name).</summary>
    public static void Register(string name, Func<SyntheticVocabularies, SyntheticModelSpec> make)
    {
        lock (Entries)
        {
            Entries.RemoveAll(e => e.Name == name);
            Entries.Add((name, make));
        }
    }

    /// <summary>The named model's spec with <paramref name="weightType"/> matrices; the name gains the type's suffix
    /// ("llama-q8_0") when it is not f32.</summary>
    public static SyntheticModelSpec Create(string name, SyntheticVocabularies vocabularies, GgmlType weightType = GgmlType.F32)
    {
        Func<SyntheticVocabularies, SyntheticModelSpec>? make;
        lock (Entries) make = Entries.FirstOrDefault(e => e.Name == name).Make;
        if (make is null) throw new ArgumentException($"no synthetic model '{name}' (known: {string.Join(", ", Names)})");
        var s = make(vocabularies);
        return weightType == GgmlType.F32 ? s : s with { Name = $"{s.Name}-{weightType.ToString().ToLowerInvariant()}", WeightType = weightType };
    }
}

/// <summary>Where the synthetic models' vocabularies come from: a SentencePiece one copied from a GGUF (stories260K's
/// 512 tokens by default in tests), and byte-level BPE ones of each pre-tokenizer where a family uses them.</summary>
public sealed class SyntheticVocabularies(SyntheticVocabulary sentencePiece, SyntheticVocabulary? llama3Bpe = null, SyntheticVocabulary? qwen2Bpe = null)
{
    public SyntheticVocabulary SentencePiece { get; } = sentencePiece;
    /// <summary>Byte-level BPE with the llama-bpe pre-tokenizer (<c>Kvq.Tokenizers.TrainedBpeVocabulary.Llama3</c>); null: not made.</summary>
    public SyntheticVocabulary? Llama3Bpe { get; } = llama3Bpe;
    /// <summary>Byte-level BPE with the qwen2 pre-tokenizer (<c>Kvq.Tokenizers.TrainedBpeVocabulary.Qwen2</c>); null: not made.</summary>
    public SyntheticVocabulary? Qwen2Bpe { get; } = qwen2Bpe;
}
