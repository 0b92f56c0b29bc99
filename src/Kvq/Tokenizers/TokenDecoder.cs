using System.Text;

namespace Kvq.Tokenizers;

/// <summary>
/// Turns a stream of tokens into text, holding back bytes of an incomplete UTF-8 character until it completes
/// (byte-fallback tokens split characters across tokens).
/// </summary>
public sealed class TokenDecoder(ITokenizer tokenizer)
{
    private readonly Decoder _utf8 = new UTF8Encoding(false, false).GetDecoder();
    private readonly char[] _chars = new char[64];

    /// <summary>Text completed by this token (possibly empty).</summary>
    public string Add(int token)
    {
        var bytes = tokenizer.TokenBytes(token);
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

    /// <summary>Whole text of a token sequence.</summary>
    public static string Decode(ITokenizer tokenizer, ReadOnlySpan<int> tokens)
    {
        var buf = new List<byte>();
        foreach (var t in tokens) buf.AddRange(tokenizer.TokenBytes(t).ToArray());
        return Encoding.UTF8.GetString(buf.ToArray());
    }
}
