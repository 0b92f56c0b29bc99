namespace Kvq.Eval;

/// <summary>
/// Where one copy-recall sample takes its text from: a passage of the book at <see cref="PassageStart"/> and filler from
/// elsewhere in the book at <see cref="FillerStart"/> (a filler of F tokens is its first F tokens). The sequence is
/// BOS, passage, filler, passage.
/// </summary>
public readonly record struct CopyRecallSample(int PassageStart, int FillerStart)
{
    /// <summary>Tokens between the passage and any filler: text right after the passage is not "other text".</summary>
    public const int MinGap = 1000;

    /// <summary>Placements of <paramref name="count"/> samples, deterministic for the seed: passage and filler regions
    /// (the filler as long as the longest filler) do not overlap and are at least <see cref="MinGap"/> tokens apart.</summary>
    public static CopyRecallSample[] Place(int bookTokens, int passageTokens, int maxFillerTokens, int count, int seed)
    {
        if (passageTokens < 1) throw new ArgumentException($"passage of {passageTokens} tokens: need at least 1");
        if (bookTokens < passageTokens + maxFillerTokens + MinGap)
            throw new ArgumentException($"the text has {bookTokens} tokens: too short for a passage of {passageTokens} and filler of " +
                                        $"{maxFillerTokens} tokens {MinGap} tokens apart");
        var rng = new Random(seed);
        var samples = new CopyRecallSample[count];
        for (int i = 0; i < count; i++)
        {
            for (int attempt = 0; ; attempt++)
            {
                int a = rng.Next(0, bookTokens - passageTokens + 1);
                int b = rng.Next(0, bookTokens - maxFillerTokens + 1);
                bool apart = b >= a + passageTokens + MinGap || a >= b + maxFillerTokens + MinGap;
                if (apart) { samples[i] = new CopyRecallSample(a, b); break; }
                if (attempt > 10_000) throw new ArgumentException($"could not place copy-recall sample {i} in {bookTokens} tokens");
            }
        }
        return samples;
    }

    /// <summary>BOS, passage, filler of <paramref name="fillerTokens"/>, passage again.</summary>
    public int[] Sequence(ReadOnlySpan<int> book, int passageTokens, int fillerTokens, int bos)
    {
        var seq = new int[1 + 2 * passageTokens + fillerTokens];
        seq[0] = bos;
        var passage = book.Slice(PassageStart, passageTokens);
        passage.CopyTo(seq.AsSpan(1));
        book.Slice(FillerStart, fillerTokens).CopyTo(seq.AsSpan(1 + passageTokens));
        passage.CopyTo(seq.AsSpan(1 + passageTokens + fillerTokens));
        return seq;
    }

    /// <summary>Target positions [start, end) of the first and the second copy in <see cref="Sequence"/>.</summary>
    public static (int Start, int End) FirstCopy(int passageTokens) => (1, 1 + passageTokens);
    public static (int Start, int End) SecondCopy(int passageTokens, int fillerTokens) =>
        (1 + passageTokens + fillerTokens, 1 + 2 * passageTokens + fillerTokens);
}
