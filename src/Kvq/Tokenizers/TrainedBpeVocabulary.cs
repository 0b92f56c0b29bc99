using Kvq.Formats.Gguf.Synthetic;

namespace Kvq.Tokenizers;

/// <summary>
/// A byte-level BPE vocabulary (tokenizer.ggml.model "gpt2") learned from a text with a family's pre-tokenizer
/// (llama-bpe for Llama 3, qwen2 for Qwen), so that the words, digits, spaces and punctuation its regex cuts are merged
/// as in a real vocabulary of that family: the 256 byte tokens, then one token per merge in the order learned, then the
/// family's special tokens. Learning is plain BPE (most frequent adjacent pair, ties by ordinal order), written here
/// because the point is a small vocabulary over the very regexes under test, not a tokenizer-training library.
/// </summary>
public sealed class TrainedBpeVocabulary : SyntheticVocabulary
{
    private readonly List<SyntheticMetadata> _entries = [];
    public override int Count { get; }
    public IReadOnlyList<string> Tokens { get; }
    public IReadOnlyList<string> Merges { get; }

    /// <param name="pre">GGUF tokenizer.ggml.pre value: "llama-bpe" or "qwen2".</param>
    /// <param name="specials">Control tokens appended after the merges; the first is BOS, the second EOS.</param>
    public TrainedBpeVocabulary(string text, int merges, string pre, IReadOnlyList<string> specials, bool addBos)
    {
        var kind = pre switch
        {
            "llama-bpe" => BpePreTokenizer.Llama3,
            "qwen2" => BpePreTokenizer.Qwen2,
            _ => throw new ArgumentException($"no synthetic BPE vocabulary for pre-tokenizer '{pre}' (llama-bpe, qwen2)", nameof(pre)),
        };
        if (specials.Count < 2) throw new ArgumentException("a BOS and an EOS special token are needed", nameof(specials));
        var words = new List<string>();
        new BpeWordSplitter(kind).Split(text, words);
        // Each distinct word (the splitter gives it byte-level already: one char per UTF-8 byte) as symbols, with its count.
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var word in words) counts[word] = counts.GetValueOrDefault(word) + 1;
        var table = counts.OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => (Symbols: kv.Key.Select(c => c.ToString()).ToList(), Count: kv.Value))
            .ToList();
        var tokens = new List<string>(Enumerable.Range(0, 256).Select(b => ByteLevel.ByteToChar[b].ToString()));
        var known = new HashSet<string>(tokens, StringComparer.Ordinal);
        var mergeList = new List<string>();
        while (mergeList.Count < merges)
        {
            var pairs = new Dictionary<(string, string), int>();
            foreach (var (symbols, count) in table)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    pairs[(symbols[i], symbols[i + 1])] = pairs.GetValueOrDefault((symbols[i], symbols[i + 1])) + count;
            if (pairs.Count == 0) break;
            var best = pairs.OrderByDescending(p => p.Value)
                .ThenBy(p => p.Key.Item1, StringComparer.Ordinal).ThenBy(p => p.Key.Item2, StringComparer.Ordinal).First().Key;
            string merged = best.Item1 + best.Item2;
            mergeList.Add(best.Item1 + " " + best.Item2);
            if (known.Add(merged)) tokens.Add(merged);
            foreach (var (symbols, _) in table)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (symbols[i] == best.Item1 && symbols[i + 1] == best.Item2)
                    {
                        symbols[i] = merged;
                        symbols.RemoveAt(i + 1);
                    }
        }
        int firstSpecial = tokens.Count;
        tokens.AddRange(specials);
        var types = new int[tokens.Count];
        for (int i = 0; i < types.Length; i++) types[i] = i >= firstSpecial ? (int)TokenType.Control : (int)TokenType.Normal;
        Tokens = tokens;
        Merges = mergeList;
        Count = tokens.Count;
        _entries.Add(SyntheticMetadata.Str("tokenizer.ggml.model", "gpt2"));
        _entries.Add(SyntheticMetadata.Str("tokenizer.ggml.pre", pre));
        _entries.Add(SyntheticMetadata.Array("tokenizer.ggml.tokens", tokens.ToArray()));
        _entries.Add(SyntheticMetadata.Array("tokenizer.ggml.token_type", types));
        _entries.Add(SyntheticMetadata.Array("tokenizer.ggml.merges", mergeList.ToArray()));
        _entries.Add(SyntheticMetadata.U32("tokenizer.ggml.bos_token_id", firstSpecial));
        _entries.Add(SyntheticMetadata.U32("tokenizer.ggml.eos_token_id", firstSpecial + 1));
        _entries.Add(SyntheticMetadata.Bool("tokenizer.ggml.add_bos_token", addBos));
    }

    public override IEnumerable<SyntheticMetadata> Metadata() => _entries;

    /// <summary>Llama 3's shape: llama-bpe pre-tokenizer, BOS added, &lt;|begin_of_text|&gt; / &lt;|end_of_text|&gt;.</summary>
    public static TrainedBpeVocabulary Llama3(string text, int merges = 700) =>
        new(text, merges, "llama-bpe", ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], addBos: true);

    /// <summary>Qwen2/Qwen3's shape: qwen2 pre-tokenizer, no BOS added, &lt;|endoftext|&gt; and the chat markers.</summary>
    public static TrainedBpeVocabulary Qwen2(string text, int merges = 700) =>
        new(text, merges, "qwen2", ["<|endoftext|>", "<|im_end|>", "<|im_start|>"], addBos: false);
}
