namespace Kvq.Formats.Gguf.Synthetic;

/// <summary>
/// A vocabulary with its last tokens renamed to a family's control tokens (type 3), for architectures whose loader in
/// llama.cpp looks them up by text: Phi-3's (&lt;|end|&gt;, &lt;|endoftext|&gt;, ...) are required, a file without them is
/// refused ("error loading model vocabulary"). The renamed ids are rare merges of the base vocabulary.
/// </summary>
public sealed class SpecialTokensVocabulary : SyntheticVocabulary
{
    private const int ControlType = 3;   // llama.cpp's LLAMA_TOKEN_TYPE_CONTROL
    private readonly List<SyntheticMetadata> _entries = [];

    public override int Count { get; }

    public SpecialTokensVocabulary(SyntheticVocabulary source, IReadOnlyList<string> controlTokens)
    {
        Count = source.Count;
        int first = Count - controlTokens.Count;
        if (Count == 0)   // a stand-in vocabulary (only the spec's architecture is wanted): nothing to rename
        {
            _entries.AddRange(source.Metadata());
            return;
        }
        if (first < 3) throw new ArgumentException($"a vocabulary of {Count} tokens cannot take {controlTokens.Count} control tokens");
        foreach (var m in source.Metadata())
        {
            switch (m.Key)
            {
                case "tokenizer.ggml.tokens":
                    var tokens = (string[])((string[])m.Value).Clone();
                    for (int i = 0; i < controlTokens.Count; i++) tokens[first + i] = controlTokens[i];
                    _entries.Add(m with { Value = tokens });
                    break;
                case "tokenizer.ggml.token_type":
                    var types = (int[])((int[])m.Value).Clone();
                    for (int i = 0; i < controlTokens.Count; i++) types[first + i] = ControlType;
                    _entries.Add(m with { Value = types });
                    break;
                default:
                    _entries.Add(m);
                    break;
            }
        }
    }

    public override IEnumerable<SyntheticMetadata> Metadata() => _entries;
}
