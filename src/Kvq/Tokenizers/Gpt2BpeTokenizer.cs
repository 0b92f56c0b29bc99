using System.Text;
using Microsoft.ML.Tokenizers;

namespace Kvq.Tokenizers;

/// <summary>
/// Byte-level BPE vocabulary (GGUF tokenizer.ggml.model = "gpt2": GPT-2, Llama-3, Qwen2 ...), encoding as llama.cpp
/// does: special tokens are cut out first, the rest is split into words by the pre-tokenizer regexes, each word's
/// UTF-8 bytes are mapped to GPT-2's byte characters and merged by merge rank. The merging itself is
/// Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/> built from the GGUF's pieces and merges; the word splitting
/// is ours because it must follow llama.cpp's code-point classes (see <see cref="BpeWordSplitter"/>).
/// Build one with <see cref="TokenizerFactory.FromGguf"/>.
/// </summary>
public sealed class Gpt2BpeTokenizer : ITokenizer
{
    private readonly TokenVocabulary _vocab;
    private readonly BpeTokenizer _bpe;
    private readonly BpeWordSplitter _splitter;
    private readonly byte[][] _bytes;
    private readonly bool[] _eog;

    /// <exception cref="ArgumentException">a merge is malformed or names a piece that is not in the vocabulary.</exception>
    internal Gpt2BpeTokenizer(TokenVocabulary vocab, string[] merges, BpePreTokenizer pre, int bosId, int eosId,
        bool addBos, bool addSpacePrefix, IEnumerable<int> endOfGeneration)
    {
        _vocab = vocab;
        PreTokenizer = pre;
        BosId = bosId;
        EosId = eosId;
        AddBos = addBos;
        AddSpacePrefix = addSpacePrefix;
        MergeCount = merges.Length;
        var pieces = new KeyValuePair<string, int>[vocab.Count];
        for (int i = 0; i < pieces.Length; i++) pieces[i] = new(vocab.Pieces[i], i);
        try
        {
            _bpe = BpeTokenizer.Create(new BpeOptions(pieces) { Merges = merges });
        }
        catch (InvalidOperationException e)
        {
            throw new ArgumentException(e.Message, e);
        }
        _splitter = new BpeWordSplitter(pre);
        _eog = new bool[vocab.Count];
        foreach (int id in endOfGeneration) _eog[id] = true;
        _bytes = new byte[vocab.Count][];
        for (int i = 0; i < vocab.Count; i++) _bytes[i] = DecodedBytes(vocab.Pieces[i], vocab.Types[i]);
    }

    public BpePreTokenizer PreTokenizer { get; }
    /// <summary>Llama-3 style: a word that is itself a piece is taken whole, without merging (llama.cpp's ignore_merges).</summary>
    public bool IgnoreMerges => PreTokenizer == BpePreTokenizer.Llama3;
    public int MergeCount { get; }
    public int VocabSize => _vocab.Count;
    public int BosId { get; }
    public int EosId { get; }
    public bool AddBos { get; }
    public bool AddSpacePrefix { get; }

    public TokenType Type(int id) => _vocab.Types[id];
    public string Piece(int id) => _vocab.Pieces[id];
    public ReadOnlySpan<byte> TokenBytes(int id) => _bytes[id];
    public bool IsEndOfGeneration(int id) => (uint)id < (uint)_eog.Length && _eog[id];

    public int[] Encode(string text, bool addBos, bool parseSpecial = false)
    {
        text = TokenVocabulary.ReplaceLoneSurrogates(text);
        var output = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId >= 0) output.Add(BosId);
        var words = new List<string>();
        foreach (var f in _vocab.Partition(text, parseSpecial))
        {
            if (!f.IsText)
            {
                output.Add(f.Token);
                continue;
            }
            words.Clear();
            _splitter.Split(text.AsSpan(f.Start, f.Length), words);
            foreach (string word in words)
            {
                int whole = IgnoreMerges ? _vocab.Find(word) : -1;
                if (whole >= 0) output.Add(whole);
                else output.AddRange(_bpe.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false));
            }
        }
        return output.ToArray();
    }

    /// <summary>llama.cpp's token_to_piece for BPE with special = false.</summary>
    private static byte[] DecodedBytes(string piece, TokenType type)
    {
        if (type == TokenType.UserDefined) return Encoding.UTF8.GetBytes(piece);
        if (type != TokenType.Normal) return [];
        var bytes = new List<byte>(piece.Length);
        Span<byte> utf8 = stackalloc byte[4];
        foreach (var r in piece.EnumerateRunes())
        {
            if (r.IsBmp && ByteLevel.TryGetByte((char)r.Value, out byte b))
            {
                bytes.Add(b);
                continue;
            }
            // Not a byte character: llama.cpp's llama_decode_text writes this marker; keep its exact text.
            var marker = new StringBuilder("[UNK_BYTE_0x");
            int n = r.EncodeToUtf8(utf8);
            for (int k = 0; k < n; k++) marker.Append(utf8[k].ToString("x2"));
            marker.Append(piece).Append(']');
            bytes.AddRange(Encoding.UTF8.GetBytes(marker.ToString()));
        }
        return bytes.ToArray();
    }
}
