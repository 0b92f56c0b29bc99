using Kvq.Tokenizers;

namespace Kvq.Eval;

/// <summary>
/// Fits a prompt made of units (filler sentences) into a token budget: the largest unit count whose prompt tokenizes to
/// at most the budget (tokens grow with the count, so a search over it), with the needle after round(depth x n)
/// units. Tokenization is of the whole text, as a user's prompt would be.
/// </summary>
internal static class RetrievalPromptBuilder
{
    /// <param name="compose">(units, needle after unit k) -> (text before the needle, text from the needle on).</param>
    public static RetrievalPrompt Fit(ITokenizer tokenizer, string task, int length, double depth, int trial, string answer,
        int maxUnits, Func<int, int, (string Before, string From)> compose)
    {
        if (depth is < 0 or > 1 || double.IsNaN(depth)) throw new ArgumentException($"{task}: depth {depth} is outside 0..1");
        bool bos = tokenizer.AddBos && tokenizer.BosId >= 0;
        int Count(int n)
        {
            var (before, from) = compose(n, Split(n, depth));
            return tokenizer.Encode(before + from, bos).Length;
        }
        if (Count(0) > length)
            throw new ArgumentException($"{task}: a prompt of {length} tokens cannot hold even the needle and the question ({Count(0)} tokens)");
        // Gallop up (1, 2, 4, ...) to the first count over the budget, then bisect: tokenizes texts of about the budget's size only.
        int lo = 0, hi = 1;
        while (hi <= maxUnits && Count(hi) <= length) { lo = hi; hi *= 2; }
        hi = Math.Min(hi - 1, maxUnits);
        while (lo < hi)
        {
            int mid = lo + (hi - lo + 1) / 2;
            if (Count(mid) <= length) lo = mid; else hi = mid - 1;
        }
        var (b, f) = compose(lo, Split(lo, depth));
        var tokens = tokenizer.Encode(b + f, bos);
        // A trailing space joins the needle's first token ("▁The"), so count the tokens before it without it.
        int needle = tokenizer.Encode(b.TrimEnd(' '), bos).Length;
        return new RetrievalPrompt(b + f, tokens, answer, Math.Min(needle, tokens.Length), length, depth, trial);
    }

    /// <summary>Characters at the start of <paramref name="candidate"/> that equal those of <paramref name="answer"/>.</summary>
    public static int CommonPrefix(string candidate, string answer, bool ignoreCase)
    {
        int n = 0;
        while (n < candidate.Length && n < answer.Length
               && (ignoreCase ? char.ToLowerInvariant(candidate[n]) == char.ToLowerInvariant(answer[n]) : candidate[n] == answer[n])) n++;
        return n;
    }

    /// <summary>Units before the needle: round(depth x n), halves away from zero.</summary>
    public static int Split(int units, double depth) => (int)Math.Round(depth * units, MidpointRounding.AwayFromZero);

    /// <summary>A seed per (run seed, trial), so trial t has the same key and text whatever else runs.</summary>
    /// <remarks>Not HashCode.Combine, which is randomized per process: a fixed mix (splitmix64's finalizer).</remarks>
    public static int TrialSeed(int seed, int trial)
    {
        ulong z = (ulong)(uint)seed * 0x9E3779B97F4A7C15UL + (ulong)(uint)trial + 0x632BE59BD9B4E019UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (int)((z ^ (z >> 31)) & int.MaxValue);
    }
}
