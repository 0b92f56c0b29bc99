namespace Kvq.Tests.Cache.Policies.Reference;

/// <summary>
/// The reference selection, written as a sort: the first <c>sinks</c> slots stay, then the others by score descending,
/// ties to the more recent slot (higher index), until <c>k</c> slots are kept. Also notes the slots whose score lies
/// within a float rounding of the boundary (a different, not exactly equal score) so that a decision that float
/// attention could tip either way is not mistaken for a wrong one; exact ties are never excused.
/// </summary>
internal static class RefTopK
{
    /// <summary>Relative tolerance of "within a float rounding" (float attention sums of ~100 terms).</summary>
    public const double Eps = 1e-4;

    public static bool[] Select(double[] scores, int sinks, int k, ISet<int>? nearBoundary = null)
    {
        int n = scores.Length;
        sinks = Math.Min(sinks, n);
        k = Math.Clamp(k, sinks, n);
        var kept = new bool[n];
        for (int s = 0; s < sinks; s++) kept[s] = true;
        var order = Enumerable.Range(sinks, n - sinks).OrderByDescending(s => scores[s]).ThenByDescending(s => s).ToArray();
        for (int i = 0; i < k - sinks; i++) kept[order[i]] = true;
        if (nearBoundary != null && k > sinks && k < n)
        {
            double last = scores[order[k - sinks - 1]], next = scores[order[k - sinks]];
            double tolerance = Eps * (1 + Math.Abs(last));
            if (!double.IsInfinity(last) && last != next && last - next <= tolerance)
            {
                var close = order.Where(s => Math.Abs(scores[s] - last) <= 2 * tolerance).ToArray();
                foreach (int s in close)
                    if (close.Count(o => scores[o] == scores[s]) == 1) nearBoundary.Add(s);
            }
        }
        return kept;
    }

    /// <summary>How many pairs of exactly equal scores the boundary split (one kept, one not): ties decided by recency.</summary>
    public static int SplitTies(double[] scores, bool[] kept, int sinks)
    {
        int ties = 0;
        for (int a = sinks; a < scores.Length; a++)
            for (int b = a + 1; b < scores.Length; b++)
                if (scores[a] == scores[b] && kept[a] != kept[b]) ties++;
        return ties;
    }
}
