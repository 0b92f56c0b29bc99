namespace Kvq.Tests.Cache.Policies.Reference;

/// <summary>One KV head of one layer of the reference cache, in double precision: the slots held in position order,
/// each with its token position, key (as attention reads it), log-weight (merged slots) and attention statistic.</summary>
internal sealed class RefHead
{
    public readonly List<int> Positions = [];
    public readonly List<double[]> Keys = [];
    public readonly List<double> LogWeights = [];
    public readonly List<double> Attention = [];

    public int Count => Positions.Count;

    public void Append(int position, double[] key)
    {
        Positions.Add(position);
        Keys.Add(key);
        LogWeights.Add(0);
        Attention.Add(0);
    }

    /// <summary>Adds the attention probabilities of one query (already scaled) over the first <paramref name="visible"/>
    /// slots: softmax of q . k + log-weight.</summary>
    public void Observe(ReadOnlySpan<float> query, double scale, int visible)
    {
        var z = new double[visible];
        double max = double.NegativeInfinity, sum = 0;
        for (int s = 0; s < visible; s++)
        {
            double dot = 0;
            for (int d = 0; d < query.Length; d++) dot += query[d] * Keys[s][d];
            z[s] = dot * scale + LogWeights[s];
            max = Math.Max(max, z[s]);
        }
        for (int s = 0; s < visible; s++) sum += z[s] = Math.Exp(z[s] - max);
        for (int s = 0; s < visible; s++) Attention[s] += z[s] / sum;
    }

    /// <summary>Drops the slots not kept, keeping the order.</summary>
    public void Compact(bool[] kept)
    {
        for (int s = Count - 1; s >= 0; s--)
        {
            if (kept[s]) continue;
            Positions.RemoveAt(s);
            Keys.RemoveAt(s);
            LogWeights.RemoveAt(s);
            Attention.RemoveAt(s);
        }
    }

    /// <summary>
    /// CaM/D2O merging: each evicted slot (in slot order, sinks excluded) folds into the kept non-sink slot with the
    /// most similar key by cosine (first of equals), unless the similarity is below <paramref name="threshold"/>: keys
    /// are averaged with the slots' token counts as weights, the counts add (log-weight), and so does attention.
    /// </summary>
    public void Merge(bool[] kept, int sinks, double threshold)
    {
        for (int e = sinks; e < Count; e++)
        {
            if (kept[e]) continue;
            int best = -1;
            double bestSim = double.NegativeInfinity;
            for (int k = sinks; k < Count; k++)
            {
                if (!kept[k]) continue;
                double sim = Dot(Keys[e], Keys[k]) / (Norm(Keys[e]) * Norm(Keys[k]));
                if (sim > bestSim) { bestSim = sim; best = k; }
            }
            if (best < 0 || bestSim < threshold) continue;
            double wk = Math.Exp(LogWeights[best]), we = Math.Exp(LogWeights[e]);
            var merged = new double[Keys[best].Length];
            for (int d = 0; d < merged.Length; d++) merged[d] = (wk * Keys[best][d] + we * Keys[e][d]) / (wk + we);
            Keys[best] = merged;
            LogWeights[best] = Math.Log(wk + we);
            Attention[best] += Attention[e];
        }
    }

    public static double Norm(double[] x) => Math.Sqrt(Dot(x, x));

    private static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }
}
