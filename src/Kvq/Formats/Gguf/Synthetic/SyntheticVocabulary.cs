namespace Kvq.Formats.Gguf.Synthetic;

/// <summary>The tokenizer.* metadata of a synthetic model: llama.cpp refuses a GGUF without a vocabulary, and a
/// vocabulary of the family's type lets tokenizers be compared on real text.</summary>
public abstract class SyntheticVocabulary
{
    /// <summary>Tokens in the vocabulary (the embedding and output widths).</summary>
    public abstract int Count { get; }

    /// <summary>The tokenizer.* entries, in the order they are written.</summary>
    public abstract IEnumerable<SyntheticMetadata> Metadata();
}

/// <summary>Every tokenizer.* key of an existing GGUF, as stored (e.g. stories260K's 512-token SentencePiece vocabulary).</summary>
public sealed class CopiedVocabulary : SyntheticVocabulary
{
    private readonly List<SyntheticMetadata> _entries = [];
    public string Source { get; }
    public override int Count { get; }

    public CopiedVocabulary(string ggufPath)
    {
        Source = ggufPath;
        using var gguf = GgufFile.Open(ggufPath);
        foreach (var (key, type) in gguf.MetadataTypes)
            if (key.StartsWith("tokenizer.", StringComparison.Ordinal)) _entries.Add(new SyntheticMetadata(key, type, gguf.Metadata[key]));
        var tokens = gguf.TryGet<string[]>("tokenizer.ggml.tokens")
            ?? throw new ModelFormatException(ggufPath, "metadata 'tokenizer.ggml.tokens'", 0, "required to copy a vocabulary, but missing");
        Count = tokens.Length;
    }

    public override IEnumerable<SyntheticMetadata> Metadata() => _entries;
}
