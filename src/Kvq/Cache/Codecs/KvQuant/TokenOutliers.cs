namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// Per-token dynamic outliers (KVQuant's value scheme): the k largest and the k smallest values of a vector are
/// outliers (largest first, ties to the lower index; the smallest are chosen among the rest), and the min/max of the
/// remaining values set the token's zero and range. Shared by the codec and by calibration so both see the same split.
/// </summary>
public static class TokenOutliers
{
    /// <summary>Marks 2k outliers in <paramref name="isOutlier"/> (length D, cleared first), writes their indices in
    /// channel order to <paramref name="indices"/> (2k) and returns the min and max of the rest.</summary>
    public static (float Min, float Max) Split(ReadOnlySpan<float> x, int k, Span<bool> isOutlier, Span<int> indices)
    {
        int d = x.Length;
        if (2 * k >= d) throw new ArgumentException($"{2 * k} outliers leave nothing of a {d}-value vector");
        isOutlier[..d].Clear();
        for (int j = 0; j < k; j++)
        {
            int best = -1;
            for (int c = 0; c < d; c++)
                if (!isOutlier[c] && (best < 0 || x[c] > x[best])) best = c;
            isOutlier[best] = true;
        }
        for (int j = 0; j < k; j++)
        {
            int best = -1;
            for (int c = 0; c < d; c++)
                if (!isOutlier[c] && (best < 0 || x[c] < x[best])) best = c;
            isOutlier[best] = true;
        }
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        int w = 0;
        for (int c = 0; c < d; c++)
        {
            if (isOutlier[c])
            {
                if (w < indices.Length) indices[w] = c;
                w++;
                continue;
            }
            min = Math.Min(min, x[c]);
            max = Math.Max(max, x[c]);
        }
        return (min, max);
    }

    /// <summary>Values' outliers beside a block: <see cref="Split"/>'s k largest and k smallest are candidates, and a
    /// candidate stays an outlier only when it lies more than <paramref name="margin"/> times the rest's half-range
    /// from the rest's middle (else it joins the dense part, widening the range a little). Marks the outliers in
    /// <paramref name="isOutlier"/>, writes them in channel order to <paramref name="indices"/> and returns the min and
    /// max of the non-outliers and how many outliers there are (0 to 2k).</summary>
    public static (float Min, float Max, int Count) SplitBeyond(ReadOnlySpan<float> x, int k, float margin, Span<bool> isOutlier,
        Span<int> indices)
    {
        var (min, max) = Split(x, k, isOutlier, indices);
        float mid = (max + min) * 0.5f, half = (max - min) * 0.5f;
        int w = 0;
        for (int c = 0; c < x.Length; c++)
        {
            if (!isOutlier[c]) continue;
            if (Math.Abs(x[c] - mid) <= margin * half)
            {
                isOutlier[c] = false;
                min = Math.Min(min, x[c]);
                max = Math.Max(max, x[c]);
            }
            else indices[w++] = c;
        }
        return (min, max, w);
    }
}
