namespace Kvq.Cache.Policies;

/// <summary>Which slots stay: the sinks, then the top-k by score. Ties (the recent window's +inf, equal positions of a
/// score) go to the most recent slots; NaN scores count as the lowest.</summary>
public static class SlotSelector
{
    /// <param name="scores">One per slot; overwritten (NaN replaced).</param>
    /// <param name="sinks">Leading slots always kept.</param>
    /// <param name="keep">Slots to keep in all (at least the sinks; at most scores.Length).</param>
    /// <param name="kept">Output, one per slot.</param>
    public static void TopK(Span<float> scores, int sinks, int keep, Span<bool> kept)
    {
        int n = scores.Length;
        if (kept.Length < n) throw new ArgumentException($"{kept.Length} flags for {n} slots");
        sinks = Math.Min(sinks, n);
        keep = Math.Clamp(keep, sinks, n);
        kept[..n].Clear();
        kept[..sinks].Fill(true);
        int rest = keep - sinks;
        if (rest == 0) return;
        var cand = scores[sinks..n];
        for (int i = 0; i < cand.Length; i++) if (float.IsNaN(cand[i])) cand[i] = float.NegativeInfinity;
        float threshold = KthLargest(cand, rest);
        int above = 0;
        for (int i = 0; i < cand.Length; i++)
            if (cand[i] > threshold) { kept[sinks + i] = true; above++; }
        int ties = rest - above;
        for (int i = cand.Length - 1; i >= 0 && ties > 0; i--)
            if (cand[i] == threshold) { kept[sinks + i] = true; ties--; }
    }

    /// <summary>The k-th largest value (1-based) by quickselect over a copy kept on the stack or rented.</summary>
    private static float KthLargest(ReadOnlySpan<float> values, int k)
    {
        var pool = System.Buffers.ArrayPool<float>.Shared;
        var copy = pool.Rent(values.Length);
        try
        {
            var a = copy.AsSpan(0, values.Length);
            values.CopyTo(a);
            int lo = 0, hi = a.Length - 1, target = k - 1; // index in descending order
            while (true)
            {
                if (lo == hi) return a[lo];
                float pivot = a[(lo + hi) >>> 1];
                int i = lo, j = hi;
                while (i <= j)
                {
                    while (a[i] > pivot) i++;
                    while (a[j] < pivot) j--;
                    if (i <= j) { (a[i], a[j]) = (a[j], a[i]); i++; j--; }
                }
                if (target <= j) hi = j;
                else if (target >= i) lo = i;
                else return a[target];
            }
        }
        finally { pool.Return(copy); }
    }
}
