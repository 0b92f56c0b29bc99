using System.Buffers.Binary;
using System.Text;
using Kvq.Formats;

namespace Kvq.Tokenizers;

/// <summary>
/// llama2.c's tokenizer file (tokenizer.bin, tok512.bin ...): int32 max_token_length, then per token float32 score,
/// int32 byte length and the piece bytes (spaces as real spaces, byte tokens as the text "&lt;0xNN&gt;"). Id 0 is
/// &lt;unk&gt;, 1 BOS and 2 EOS. llama2.c's encode is SentencePiece-BPE with a leading-space dummy prefix, so this
/// runs the same core as <see cref="SentencePieceBpeTokenizer"/>, with llama2.c's one difference: a character that
/// is not a piece becomes byte tokens before merging and never merges with its neighbours.
/// </summary>
public sealed class Llama2cTokenizer : ITokenizer
{
    public const int Bos = 1;
    public const int Eos = 2;

    private readonly SentencePieceBpeTokenizer _spm;
    private readonly string[] _pieces; // as stored in the file

    private Llama2cTokenizer(SentencePieceBpeTokenizer spm, string[] pieces, int maxTokenLength)
    {
        _spm = spm;
        _pieces = pieces;
        MaxTokenLength = maxTokenLength;
    }

    /// <summary>Longest piece in bytes, from the file header.</summary>
    public int MaxTokenLength { get; }
    public int VocabSize => _pieces.Length;
    public int BosId => Bos;
    public int EosId => Eos;
    public bool AddBos => true;
    public bool AddSpacePrefix => true;

    public float Score(int id) => _spm.Score(id);
    public TokenType Type(int id) => _spm.Type(id);
    public string Piece(int id) => _pieces[id];
    public ReadOnlySpan<byte> TokenBytes(int id) => _spm.TokenBytes(id);
    public bool IsEndOfGeneration(int id) => id == Eos;

    /// <summary>llama2.c's encode. It has no special-token syntax, so <paramref name="parseSpecial"/> is ignored.</summary>
    public int[] Encode(string text, bool addBos, bool parseSpecial = false) => _spm.Encode(text, addBos, parseSpecial: false);

    /// <param name="vocabSize">Tokens to read (llama2.c takes it from the model header); null reads to the end.</param>
    /// <exception cref="ModelFormatException">the file is truncated or malformed.</exception>
    public static Llama2cTokenizer Load(string path, int? vocabSize = null)
    {
        byte[] data = File.ReadAllBytes(path);
        ModelFormatException Error(string item, long offset, string message) => new(path, item, offset, message);
        if (data.Length < 4) throw Error("max_token_length", 0, $"needs 4 bytes but the file has {data.Length}");
        int maxLen = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (maxLen <= 0) throw Error("max_token_length", 0, $"expected a positive length, found {maxLen}");

        var strict = new UTF8Encoding(false, throwOnInvalidBytes: true);
        var pieces = new List<string>();
        var scores = new List<float>();
        int pos = 4;
        while (vocabSize is null ? pos < data.Length : pieces.Count < vocabSize)
        {
            int id = pieces.Count;
            if (pos + 8 > data.Length)
                throw Error($"token {id}", pos, $"needs 8 bytes of score and length but the file ends at {data.Length} (truncated?)");
            float score = BinaryPrimitives.ReadSingleLittleEndian(data.AsSpan(pos));
            int len = BinaryPrimitives.ReadInt32LittleEndian(data.AsSpan(pos + 4));
            if (len < 0 || len > maxLen)
                throw Error($"token {id}", pos + 4, $"piece length {len} is outside 0..max_token_length {maxLen}");
            if (pos + 8 + len > data.Length)
                throw Error($"token {id}", pos + 8, $"piece of {len} bytes runs past the end of the file ({data.Length} bytes)");
            string piece;
            try { piece = strict.GetString(data, pos + 8, len); }
            catch (DecoderFallbackException) { throw Error($"token {id}", pos + 8, "piece is not valid UTF-8"); }
            pieces.Add(piece);
            scores.Add(score);
            pos += 8 + len;
        }
        if (pieces.Count <= Eos) throw Error("tokens", pos, $"expected at least {Eos + 1} tokens (unk, BOS, EOS), found {pieces.Count}");

        var spmPieces = new string[pieces.Count];
        var types = new TokenType[pieces.Count];
        for (int i = 0; i < spmPieces.Length; i++)
        {
            string p = pieces[i];
            types[i] = i switch
            {
                0 => TokenType.Unknown,
                Bos or Eos => TokenType.Control,
                _ => IsByteToken(p) ? TokenType.Byte : TokenType.Normal,
            };
            spmPieces[i] = p.Replace(' ', SpmEncoder.SpaceMarker);
        }
        TokenVocabulary vocab;
        try { vocab = new TokenVocabulary(spmPieces, [.. scores], types); }
        catch (ArgumentException e) { throw new ModelFormatException(path, "tokens", 4, e.Message, e); }
        var spm = new SentencePieceBpeTokenizer(vocab, Bos, Eos, unkId: 0, addBos: true, addSpacePrefix: true,
            endOfGeneration: [Eos], freezeUnknownChars: true);
        return new Llama2cTokenizer(spm, [.. pieces], maxLen);
    }

    private static bool IsByteToken(string p) =>
        p.Length == 6 && p.StartsWith("<0x", StringComparison.Ordinal) && p[5] == '>' && Uri.IsHexDigit(p[3]) && Uri.IsHexDigit(p[4]);
}
