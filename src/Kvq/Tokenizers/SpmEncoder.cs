using System.Buffers;
using System.Text;

namespace Kvq.Tokenizers;

/// <summary>
/// llama.cpp's SentencePiece-BPE encoder (llm_tokenizer_spm): split into code points, then repeatedly merge the
/// adjacent pair whose concatenation is the vocabulary piece with the highest score (leftmost on ties); pieces left
/// that are not in the vocabulary fall back to &lt;0xNN&gt; byte tokens. Written by hand because llama.cpp is the
/// oracle: Microsoft.ML.Tokenizers' SentencePiece BPE needs the .model protobuf (a GGUF only carries pieces, scores
/// and types), and real SentencePiece parts from llama.cpp on runs of spaces before punctuation and on the order of
/// equal-score merges (see the tokenizer tests). The same core serves llama2.c's tokenizer, whose encode is this
/// algorithm with a leading-space prefix.
/// </summary>
internal sealed class SpmEncoder
{
    public const char SpaceMarker = '\u2581'; // '▁': SentencePiece's visible space

    private readonly TokenVocabulary _vocab;
    private readonly int[] _byteTokens;      // token of each byte value, -1 where the vocabulary has none
    private readonly int _unkId;
    private readonly bool _freezeUnknownChars;

    /// <param name="freezeUnknownChars">llama2.c turns a code point that is not a piece into byte tokens before
    /// merging, so it never merges with a neighbour; llama.cpp keeps it as a symbol that may still merge.</param>
    public SpmEncoder(TokenVocabulary vocab, int unkId, bool freezeUnknownChars)
    {
        _vocab = vocab;
        _unkId = unkId;
        _freezeUnknownChars = freezeUnknownChars;
        _byteTokens = new int[256];
        for (int b = 0; b < 256; b++)
        {
            // llama.cpp's byte_to_token: "<0xNN>" first, then the byte itself as a one-character piece.
            int id = vocab.Find($"<0x{b:X2}>");
            if (id < 0 && b < 0x80) id = vocab.Find(((char)b).ToString());
            _byteTokens[b] = id;
        }
    }

    /// <summary>
    /// Appends the tokens of one text fragment; <paramref name="spacePrefix"/> puts the dummy-prefix space first.
    /// Spaces become '▁' before matching.
    /// </summary>
    public void EncodeFragment(ReadOnlySpan<char> fragment, bool spacePrefix, List<int> output)
    {
        int n = fragment.Length + (spacePrefix ? 1 : 0);
        if (n == 0) return;
        char[] rented = ArrayPool<char>.Shared.Rent(n);
        try
        {
            var text = rented.AsSpan(0, n);
            int o = 0;
            if (spacePrefix) text[o++] = SpaceMarker;
            foreach (char c in fragment) text[o++] = c == ' ' ? SpaceMarker : c;
            Encode(text, output);
        }
        finally { ArrayPool<char>.Shared.Return(rented); }
    }

    private struct Symbol
    {
        public int Start;   // char offset in the escaped text
        public int Length;  // chars; 0 once merged into its left neighbour
        public int Prev, Next;
        public bool Frozen;
    }

    private readonly record struct Bigram(int Left, int Right, float Score, int Length);

    /// <summary>Highest score first; on equal scores the leftmost pair (llama.cpp's llm_bigram_spm::comparator).</summary>
    private sealed class BigramOrder : IComparer<Bigram>
    {
        public static readonly BigramOrder Instance = new();
        public int Compare(Bigram a, Bigram b) =>
            a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left);
    }

    private void Encode(ReadOnlySpan<char> text, List<int> output)
    {
        var symbols = new Symbol[text.Length];
        int count = 0;
        for (int i = 0; i < text.Length;)
        {
            int len = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            symbols[count] = new Symbol
            {
                Start = i, Length = len, Prev = count - 1, Next = i + len == text.Length ? -1 : count + 1,
                Frozen = _freezeUnknownChars && _vocab.Find(text.Slice(i, len)) < 0,
            };
            count++;
            i += len;
        }

        var queue = new PriorityQueue<Bigram, Bigram>(BigramOrder.Instance);
        for (int i = 1; i < count; i++) TryAddBigram(text, symbols, i - 1, i, queue);

        while (queue.TryDequeue(out var bigram, out _))
        {
            ref var left = ref symbols[bigram.Left];
            ref var right = ref symbols[bigram.Right];
            // Stale entry: one side was merged away or grew since the pair was queued.
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != bigram.Length) continue;
            left.Length += right.Length;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0) symbols[right.Next].Prev = bigram.Left;
            TryAddBigram(text, symbols, left.Prev, bigram.Left, queue);
            TryAddBigram(text, symbols, bigram.Left, left.Next, queue);
        }

        for (int i = 0; i != -1 && count > 0; i = symbols[i].Next)
        {
            var piece = text.Slice(symbols[i].Start, symbols[i].Length);
            int id = _vocab.Find(piece);
            if (id >= 0) output.Add(id);
            else AppendBytes(piece, output);
        }
    }

    private void TryAddBigram(ReadOnlySpan<char> text, Symbol[] symbols, int left, int right, PriorityQueue<Bigram, Bigram> queue)
    {
        if (left < 0 || right < 0 || symbols[left].Frozen || symbols[right].Frozen) return;
        int length = symbols[left].Length + symbols[right].Length;
        int id = _vocab.Find(text.Slice(symbols[left].Start, length));
        if (id < 0) return;
        var bigram = new Bigram(left, right, _vocab.Scores[id], length);
        queue.Enqueue(bigram, bigram);
    }

    /// <summary>Byte fallback for a piece that is not in the vocabulary (bytes of the escaped text, so '▁' gives
    /// E2 96 81 as in llama.cpp); a byte without a token becomes UNK (llama.cpp throws there), or is dropped when
    /// there is no UNK either.</summary>
    private void AppendBytes(ReadOnlySpan<char> piece, List<int> output)
    {
        int max = Encoding.UTF8.GetMaxByteCount(piece.Length);
        Span<byte> bytes = max <= 64 ? stackalloc byte[64] : new byte[max];
        int n = Encoding.UTF8.GetBytes(piece, bytes);
        for (int i = 0; i < n; i++)
        {
            int id = _byteTokens[bytes[i]];
            if (id < 0) id = _unkId;
            if (id >= 0) output.Add(id);
        }
    }
}
