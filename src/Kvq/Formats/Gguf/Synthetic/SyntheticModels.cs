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
        // Qwen2.5: neox RoPE, q/k/v biases, tied output, large RoPE base.
        ("qwen2", v => new SyntheticModelSpec
        {
            Name = "qwen2", Architecture = SyntheticArchitectures.Qwen2, Vocabulary = v.SentencePiece, Seed = 12,
            QkvBiases = true, TiedOutput = true, RopeBase = 1000000f,
        }),
        // Qwen3: QK-norm; head width 32 with 4 heads over a width of 64 (q is wider than the model, as in Qwen3-0.6B).
        ("qwen3", v => new SyntheticModelSpec
        {
            Name = "qwen3", Architecture = SyntheticArchitectures.Qwen3, Vocabulary = v.SentencePiece, Seed = 13,
            HeadDim = 32, RopeBase = 1000000f,
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
    ];

    public static IReadOnlyList<string> Names => Entries.Select(e => e.Name).ToList();

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
public sealed class SyntheticVocabularies(SyntheticVocabulary sentencePiece)
{
    public SyntheticVocabulary SentencePiece { get; } = sentencePiece;
}
