using System.Globalization;
using System.Text;

namespace Kvq.Tokenizers;

/// <summary>
/// SentencePiece-BPE vocabulary (GGUF tokenizer.ggml.model = "llama"), encoding and decoding exactly as llama.cpp
/// does: spaces become '▁', a dummy-prefix space goes in front of the text and after every special token, pairs merge
/// by piece score, unknown characters fall back to &lt;0xNN&gt; byte tokens. Build one with
/// <see cref="TokenizerFactory.FromGguf"/>.
/// </summary>
public sealed class SentencePieceBpeTokenizer : ITokenizer
{
    private readonly TokenVocabulary _vocab;
    private readonly SpmEncoder _encoder;
    private readonly byte[][] _bytes;   // decoded bytes per token
    private readonly bool[] _eog;

    internal SentencePieceBpeTokenizer(TokenVocabulary vocab, int bosId, int eosId, int unkId, bool addBos,
        bool addSpacePrefix, IEnumerable<int> endOfGeneration, bool freezeUnknownChars = false)
    {
        _vocab = vocab;
        BosId = bosId;
        EosId = eosId;
        UnknownId = unkId;
        AddBos = addBos;
        AddSpacePrefix = addSpacePrefix;
        _encoder = new SpmEncoder(vocab, unkId, freezeUnknownChars);
        _eog = new bool[vocab.Count];
        foreach (int id in endOfGeneration) _eog[id] = true;
        _bytes = new byte[vocab.Count][];
        for (int i = 0; i < vocab.Count; i++) _bytes[i] = DecodedBytes(vocab.Pieces[i], vocab.Types[i]);
    }

    public int VocabSize => _vocab.Count;
    public int BosId { get; }
    public int EosId { get; }
    /// <summary>Token that stands for text the vocabulary cannot spell (-1 when none).</summary>
    public int UnknownId { get; }
    public bool AddBos { get; }
    public bool AddSpacePrefix { get; }

    public TokenType Type(int id) => _vocab.Types[id];
    public float Score(int id) => _vocab.Scores[id];
    public string Piece(int id) => _vocab.Pieces[id];
    public ReadOnlySpan<byte> TokenBytes(int id) => _bytes[id];
    public bool IsEndOfGeneration(int id) => (uint)id < (uint)_eog.Length && _eog[id];

    public int[] Encode(string text, bool addBos, bool parseSpecial = false)
    {
        text = TokenVocabulary.ReplaceLoneSurrogates(text);
        var output = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId >= 0) output.Add(BosId);
        bool afterSpecial = true; // llama.cpp: the first fragment counts as following a special token
        foreach (var f in _vocab.Partition(text, parseSpecial))
        {
            if (f.IsText)
            {
                _encoder.EncodeFragment(text.AsSpan(f.Start, f.Length), AddSpacePrefix && afterSpecial, output);
                afterSpecial = false;
            }
            else
            {
                output.Add(f.Token);
                afterSpecial = true;
            }
        }
        return output.ToArray();
    }

    /// <summary>llama.cpp's token_to_piece for SPM with special = false.</summary>
    private static byte[] DecodedBytes(string piece, TokenType type) => type switch
    {
        TokenType.Normal => Encoding.UTF8.GetBytes(piece.Replace(SpmEncoder.SpaceMarker, ' ')),
        TokenType.UserDefined => Encoding.UTF8.GetBytes(piece),
        TokenType.Byte => [ParseByte(piece)],
        _ => [], // control, unknown, unused, undefined: nothing
    };

    /// <summary>"&lt;0xNN&gt;" -> NN, reading the two hex digits at offset 3 as llama.cpp's token_to_byte does.</summary>
    internal static byte ParseByte(string piece) =>
        piece.Length >= 5 && byte.TryParse(piece.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out byte b)
            ? b
            : throw new ArgumentException($"byte token '{piece}' is not of the form <0xNN>");
}
