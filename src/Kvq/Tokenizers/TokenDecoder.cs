using System.Text;

namespace Kvq.Tokenizers;

/// <summary>
/// Turns a stream of tokens into text, holding back bytes of an incomplete UTF-8 character until it completes
/// (byte-fallback tokens split characters across tokens). Invalid UTF-8 becomes U+FFFD, the same way whether the
/// bytes arrive at once or token by token.
/// </summary>
public sealed class TokenDecoder
{
    private readonly ITokenizer _tokenizer;
    private readonly Decoder _utf8 = new UTF8Encoding(false, false).GetDecoder();
    private readonly char[] _chars = new char[64];
    private bool _first;

    /// <param name="atSequenceStart">The first token added is the first of a sequence: decode as
    /// <see cref="Decode"/> does (one leading space dropped where the tokenizer adds a space prefix and the sequence
    /// does not start with BOS). Leave false to continue earlier text, e.g. when streaming generated tokens after a
    /// prompt, which is what llama.cpp's token_to_piece gives.</param>
    public TokenDecoder(ITokenizer tokenizer, bool atSequenceStart = false)
    {
        _tokenizer = tokenizer;
        _first = atSequenceStart;
    }

    /// <summary>Text completed by this token (possibly empty).</summary>
    public string Add(int token)
    {
        var bytes = FirstTokenStrip(_tokenizer, _tokenizer.TokenBytes(token), ref _first);
        if (bytes.IsEmpty) return "";
        var sb = new StringBuilder();
        while (!bytes.IsEmpty)
        {
            _utf8.Convert(bytes, _chars, flush: false, out int used, out int written, out _);
            sb.Append(_chars, 0, written);
            bytes = bytes[used..];
        }
        return sb.ToString();
    }

    /// <summary>Ends the stream: bytes of an unfinished character come out as U+FFFD.</summary>
    public string Flush()
    {
        _utf8.Convert(ReadOnlySpan<byte>.Empty, _chars, flush: true, out _, out int written, out _);
        return new string(_chars, 0, written);
    }

    /// <summary>
    /// Whole text of a token sequence, as llama.cpp's llama_detokenize(remove_special: false, unparse_special: false):
    /// control and unknown tokens give nothing, and where the tokenizer adds a space prefix one leading space of the
    /// first token is dropped unless that token is BOS (so decoding BOS + Encode(x) gives " " + x, like llama.cpp;
    /// decode the tokens after BOS to get x back).
    /// </summary>
    public static string Decode(ITokenizer tokenizer, ReadOnlySpan<int> tokens) =>
        Encoding.UTF8.GetString(DecodeBytes(tokenizer, tokens));

    /// <summary>The bytes <see cref="Decode"/> turns into text.</summary>
    public static byte[] DecodeBytes(ITokenizer tokenizer, ReadOnlySpan<int> tokens)
    {
        var buf = new List<byte>(tokens.Length * 4);
        bool first = true;
        foreach (int t in tokens) buf.AddRange(FirstTokenStrip(tokenizer, tokenizer.TokenBytes(t), ref first));
        return buf.ToArray();
    }

    private static ReadOnlySpan<byte> FirstTokenStrip(ITokenizer tokenizer, ReadOnlySpan<byte> bytes, ref bool first)
    {
        if (!first) return bytes;
        first = false;
        return tokenizer.AddSpacePrefix && !bytes.IsEmpty && bytes[0] == (byte)' ' ? bytes[1..] : bytes;
    }
}
