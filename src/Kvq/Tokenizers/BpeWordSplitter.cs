using System.Text;
using System.Text.RegularExpressions;

namespace Kvq.Tokenizers;

/// <summary>
/// Splits text into the words that byte-level BPE merges within, as llama.cpp's unicode_regex_split does: each regex
/// of the set cuts every word of the previous one into matches and the gaps between them.
/// </summary>
/// <remarks>
/// .NET's Regex matches UTF-16 code units, so \p{L} would miss letters outside the BMP, while llama.cpp classifies
/// whole code points. As llama.cpp itself does for its std::regex fallback, each code point is first collapsed to one
/// representative character of its class (ASCII stays as is; other letters, digits, punctuation, marks, symbols and
/// white space each map to one stand-in), and the regexes run over that collapsed text. llama.cpp's hand-written
/// splitters for the GPT-2 and Llama-3 regexes behave like the regexes on this representation.
/// </remarks>
internal sealed class BpeWordSplitter
{
    internal const string Gpt2 = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    internal const string Llama3 =
        @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    internal const string Qwen2 =
        @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private readonly Regex[] _regexes;

    public BpeWordSplitter(BpePreTokenizer kind)
    {
        string[] patterns = kind switch
        {
            BpePreTokenizer.Default => [@"[\p{P}\$\+<=>\^~\|]+", Gpt2, @"\p{N}+", "[0-9][0-9][0-9]"],
            BpePreTokenizer.Gpt2 => [Gpt2],
            BpePreTokenizer.Llama3 => [Llama3],
            BpePreTokenizer.Qwen2 => [Qwen2],
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
        };
        _regexes = Array.ConvertAll(patterns, p => new Regex(p, RegexOptions.CultureInvariant | RegexOptions.Compiled));
    }

    /// <summary>Appends the words of <paramref name="text"/>, each as its byte-level string (UTF-8 bytes mapped
    /// through <see cref="ByteLevel"/>).</summary>
    public void Split(ReadOnlySpan<char> text, List<string> words)
    {
        var runes = new List<Rune>(text.Length);
        foreach (var r in text.EnumerateRunes()) runes.Add(r);
        if (runes.Count == 0) return;
        var collapsed = new char[runes.Count];
        for (int i = 0; i < runes.Count; i++) collapsed[i] = Collapse(runes[i]);

        List<int> lengths = [runes.Count]; // word lengths in code points
        foreach (var regex in _regexes) lengths = SplitWords(regex, collapsed, lengths);

        var sb = new StringBuilder();
        Span<byte> utf8 = stackalloc byte[4];
        int pos = 0;
        foreach (int len in lengths)
        {
            sb.Clear();
            for (int i = pos; i < pos + len; i++)
            {
                int n = runes[i].EncodeToUtf8(utf8);
                for (int k = 0; k < n; k++) sb.Append(ByteLevel.ByteToChar[utf8[k]]);
            }
            words.Add(sb.ToString());
            pos += len;
        }
    }

    private static List<int> SplitWords(Regex regex, char[] collapsed, List<int> lengths)
    {
        var result = new List<int>(lengths.Count * 2);
        int start = 0;
        foreach (int len in lengths)
        {
            // The word is the whole input of the match, so look-aheads stop at its end as in llama.cpp.
            int last = 0;
            foreach (var m in regex.EnumerateMatches(collapsed.AsSpan(start, len)))
            {
                if (m.Length == 0) continue;
                if (m.Index > last) result.Add(m.Index - last);
                result.Add(m.Length);
                last = m.Index + m.Length;
            }
            if (last < len) result.Add(len - last);
            start += len;
        }
        return result;
    }

    /// <summary>One character of the same class as <paramref name="r"/> for .NET's Regex (llama.cpp's
    /// unicode_regex_split collapse, with stand-ins that .NET classifies like the code point they replace).</summary>
    internal static char Collapse(Rune r)
    {
        if (r.Value < 0x80) return (char)r.Value;
        if (Rune.IsWhiteSpace(r)) return '\v';
        return Rune.GetUnicodeCategory(r) switch
        {
            >= System.Globalization.UnicodeCategory.UppercaseLetter and <= System.Globalization.UnicodeCategory.OtherLetter
                => '\u00AA', // ª
            >= System.Globalization.UnicodeCategory.NonSpacingMark and <= System.Globalization.UnicodeCategory.EnclosingMark
                => '\u0300',
            >= System.Globalization.UnicodeCategory.DecimalDigitNumber and <= System.Globalization.UnicodeCategory.OtherNumber
                => '\u00B2', // ²
            >= System.Globalization.UnicodeCategory.ConnectorPunctuation and <= System.Globalization.UnicodeCategory.OtherPunctuation
                => '\u00A1', // ¡
            >= System.Globalization.UnicodeCategory.MathSymbol and <= System.Globalization.UnicodeCategory.OtherSymbol
                => '\u00A6', // ¦
            _ => '\u0080',   // separators that are not white space, controls, format, private use, unassigned
        };
    }
}
