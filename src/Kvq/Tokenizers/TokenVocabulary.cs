namespace Kvq.Tokenizers;

/// <summary>A span of input text still to be tokenized, or a special token already cut out of it.</summary>
internal readonly record struct TextFragment(int Token, int Start, int Length)
{
    public bool IsText => Token < 0;
}

/// <summary>
/// Pieces, scores and types of one vocabulary, with piece -> id lookup by span (no allocation per lookup) and
/// llama.cpp's special-token partitioning. Shared by the SentencePiece and byte-level BPE tokenizers.
/// </summary>
internal sealed class TokenVocabulary
{
    public readonly string[] Pieces;
    public readonly float[] Scores;
    public readonly TokenType[] Types;
    private readonly Dictionary<string, int> _ids;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _byspan;
    // Control, user-defined and unknown tokens, longest text first: the order llama.cpp cuts them out of the text.
    // Built on first use, rebuilt after a type change.
    private int[]? _splitOrder;

    /// <exception cref="ArgumentException">array lengths differ, or a piece appears twice (llama.cpp aborts on that).</exception>
    public TokenVocabulary(string[] pieces, float[] scores, TokenType[] types)
    {
        if (scores.Length != pieces.Length || types.Length != pieces.Length)
            throw new ArgumentException(
                $"{pieces.Length} pieces but {scores.Length} scores and {types.Length} token types");
        Pieces = pieces;
        Scores = scores;
        Types = types;
        _ids = new Dictionary<string, int>(pieces.Length, StringComparer.Ordinal);
        for (int i = 0; i < pieces.Length; i++)
        {
            // llama.cpp renames empty pieces so that they cannot match anything; do the same.
            if (pieces[i].Length == 0) pieces[i] = $"[EMPTY_{i}]";
            if (!_ids.TryAdd(pieces[i], i))
                throw new ArgumentException($"piece '{pieces[i]}' appears twice (ids {_ids[pieces[i]]} and {i})");
        }
        _byspan = _ids.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>Changes a token's type (llama.cpp retypes control-looking tokens after loading).</summary>
    public void SetType(int id, TokenType type)
    {
        Types[id] = type;
        _splitOrder = null;
    }

    private int[] BuildSplitOrder()
    {
        var split = new List<int>();
        for (int i = 0; i < Pieces.Length; i++)
            if (Types[i] is TokenType.Control or TokenType.UserDefined or TokenType.Unknown) split.Add(i);
        // llama.cpp sorts by UTF-8 length (std::sort, order of equal lengths unspecified); ties here go by id.
        return split.OrderByDescending(i => System.Text.Encoding.UTF8.GetByteCount(Pieces[i])).ThenBy(i => i).ToArray();
    }

    public int Count => Pieces.Length;

    /// <summary>Id of the token whose piece is exactly <paramref name="text"/>, or -1.</summary>
    public int Find(ReadOnlySpan<char> text) => _byspan.TryGetValue(text, out int id) ? id : -1;

    public int Find(string text) => _ids.TryGetValue(text, out int id) ? id : -1;

    /// <summary>
    /// Cuts special tokens out of <paramref name="text"/> the way llama.cpp's tokenizer_st_partition does: user-defined
    /// tokens always, control and unknown tokens only when <paramref name="parseSpecial"/>; longest token first, each
    /// one at every occurrence, left to right.
    /// </summary>
    public List<TextFragment> Partition(string text, bool parseSpecial)
    {
        var fragments = new List<TextFragment>();
        if (text.Length == 0) return fragments;
        fragments.Add(new TextFragment(-1, 0, text.Length));
        foreach (int id in _splitOrder ??= BuildSplitOrder())
        {
            if (!parseSpecial && Types[id] != TokenType.UserDefined) continue;
            string special = Pieces[id];
            if (!text.Contains(special, StringComparison.Ordinal)) continue;
            var next = new List<TextFragment>(fragments.Count + 2);
            foreach (var f in fragments)
            {
                if (!f.IsText) { next.Add(f); continue; }
                int pos = f.Start, end = f.Start + f.Length;
                while (pos < end)
                {
                    int at = text.IndexOf(special, pos, end - pos, StringComparison.Ordinal);
                    if (at < 0) break;
                    if (at > pos) next.Add(new TextFragment(-1, pos, at - pos));
                    next.Add(new TextFragment(id, at, special.Length));
                    pos = at + special.Length;
                }
                if (pos < end) next.Add(new TextFragment(-1, pos, end - pos));
            }
            fragments = next;
        }
        return fragments;
    }

    /// <summary>
    /// The text .NET would hand llama.cpp: UTF-8 encoding turns unpaired surrogates into U+FFFD, so do that here
    /// first and both sides see the same code points.
    /// </summary>
    public static string ReplaceLoneSurrogates(string text)
    {
        int i = 0;
        for (; i < text.Length; i++)
        {
            char c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { i++; continue; }
            if (char.IsSurrogate(c)) break;
        }
        if (i == text.Length) return text;
        var chars = text.ToCharArray();
        for (; i < chars.Length; i++)
        {
            char c = chars[i];
            if (char.IsHighSurrogate(c) && i + 1 < chars.Length && char.IsLowSurrogate(chars[i + 1])) { i++; continue; }
            if (char.IsSurrogate(c)) chars[i] = '\uFFFD';
        }
        return new string(chars);
    }
}
