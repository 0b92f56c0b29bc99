namespace Kvq.Tests.Cache.Policies.Reference;

/// <summary>What a reference policy knows when a layer is cut: tokens seen, the last chunk's size, the layer's budget
/// (<see cref="Keep"/>, which recent windows are a fraction of) and its sinks.</summary>
internal sealed record RefContext(int Length, int ChunkTokens, int Keep, int Sinks);

/// <summary>
/// A token policy restated from its paper in plain double-precision code (no call into Kvq's policies): the attention
/// it reads, its score per slot, its per-layer budget and, for wrappers, how it selects.
/// </summary>
internal abstract class RefPolicy
{
    /// <summary>Last queries of a chunk whose attention is observed (0 = none).</summary>
    public virtual int Observed => 0;
    public virtual bool Accumulates => false;
    public virtual int Sinks => 0;
    /// <summary>Merging threshold (cosine), or null when evicted slots are dropped.</summary>
    public virtual double? MergeThreshold => null;
    public virtual int LayerBudget(int layer, int layers, int average) => average;

    public abstract double[] Scores(RefHead head, RefContext c);

    /// <summary>The slots kept out of <paramref name="heads"/> (one head, or every head of a layer whose scores add).</summary>
    public virtual bool[] Select(RefHead[] heads, RefContext c, int k, ISet<int> near) =>
        RefTopK.Select(SummedScores(heads, c), c.Sinks, k, near);

    public double[] SummedScores(RefHead[] heads, RefContext c)
    {
        var sum = Scores(heads[0], c);
        for (int h = 1; h < heads.Length; h++)
        {
            var one = Scores(heads[h], c);
            for (int s = 0; s < sum.Length; s++) sum[s] += one[s];
        }
        return sum;
    }

    /// <summary>Scores of slots whose token is one of the last <paramref name="window"/> become +inf.</summary>
    protected static void Protect(RefHead head, int length, int window, double[] scores)
    {
        for (int s = 0; s < scores.Length; s++)
            if (head.Positions[s] >= length - window) scores[s] = double.PositiveInfinity;
    }
}

/// <summary>StreamingLLM: sinks plus the most recent tokens (score = position).</summary>
internal sealed class RefStreaming(int sinks) : RefPolicy
{
    public override int Sinks => sinks;
    public override double[] Scores(RefHead head, RefContext c) => head.Positions.Select(p => (double)p).ToArray();
}

/// <summary>H2O: attention accumulated over every query, plus a recent window (fraction of the budget or tokens).</summary>
internal sealed class RefH2o(double recent, int sinks) : RefPolicy
{
    public override int Observed => int.MaxValue;
    public override bool Accumulates => true;
    public override int Sinks => sinks;

    public override double[] Scores(RefHead head, RefContext c)
    {
        var scores = head.Attention.ToArray();
        Protect(head, c.Length, recent < 1 ? (int)Math.Ceiling(recent * c.Keep) : (int)recent, scores);
        return scores;
    }
}

/// <summary>SnapKV: the last <c>window</c> queries' attention, average-pooled over <c>pool</c> neighbouring slots (zero
/// padding, divided by the full kernel), and the observation window kept.</summary>
internal sealed class RefSnapKv(int window, int pool, int sinks) : RefPolicy
{
    public override int Observed => window;
    public override int Sinks => sinks;

    public override double[] Scores(RefHead head, RefContext c)
    {
        int n = head.Count, half = pool / 2;
        var scores = new double[n];
        for (int s = 0; s < n; s++)
        {
            double sum = 0;
            for (int j = Math.Max(0, s - half); j <= Math.Min(n - 1, s + half); j++) sum += head.Attention[j];
            scores[s] = sum / pool;
        }
        Protect(head, c.Length, Math.Min(window, c.ChunkTokens), scores);
        return scores;
    }
}

/// <summary>TOVA: the last query's attention.</summary>
internal sealed class RefTova(int sinks) : RefPolicy
{
    public override int Observed => 1;
    public override int Sinks => sinks;
    public override double[] Scores(RefHead head, RefContext c) => head.Attention.ToArray();
}

/// <summary>Key norm: the lowest L2 norms stay.</summary>
internal sealed class RefKnorm(int sinks) : RefPolicy
{
    public override int Sinks => sinks;
    public override double[] Scores(RefHead head, RefContext c) => head.Keys.Select(k => -RefHead.Norm(k)).ToArray();
}

/// <summary>PyramidKV: budgets falling linearly from 2a - a/beta (layer 0) to a/beta (top layer), at least 1.</summary>
internal sealed class RefPyramid(RefPolicy inner, double beta) : RefPolicy
{
    public override int Observed => inner.Observed;
    public override bool Accumulates => inner.Accumulates;
    public override int Sinks => inner.Sinks;

    public override int LayerBudget(int layer, int layers, int average)
    {
        if (layers == 1) return average;
        double top = average / beta, bottom = 2.0 * average - top;
        double budget = bottom + (top - bottom) * layer / (layers - 1);
        return Math.Max(1, (int)Math.Round(budget));
    }

    public override double[] Scores(RefHead head, RefContext c) => inner.Scores(head, c);
    public override bool[] Select(RefHead[] heads, RefContext c, int k, ISet<int> near) => inner.Select(heads, c, k, near);
}

/// <summary>Merging over another policy's choice (the choice itself is the inner policy's).</summary>
internal sealed class RefMerge(RefPolicy inner, double threshold) : RefPolicy
{
    public override int Observed => inner.Observed;
    public override bool Accumulates => inner.Accumulates;
    public override int Sinks => inner.Sinks;
    public override double? MergeThreshold => threshold;
    public override int LayerBudget(int layer, int layers, int average) => inner.LayerBudget(layer, layers, average);
    public override double[] Scores(RefHead head, RefContext c) => inner.Scores(head, c);
    public override bool[] Select(RefHead[] heads, RefContext c, int k, ISet<int> near) => inner.Select(heads, c, k, near);
}

/// <summary>Two policies sharing the budget: A keeps round(share x k) (at least the sinks), B the rest of what A left.</summary>
internal sealed class RefCompose(RefPolicy a, RefPolicy b, double share) : RefPolicy
{
    public override int Observed => Math.Max(a.Observed, b.Observed);
    public override bool Accumulates => a.Accumulates || b.Accumulates;
    public override int Sinks => Math.Max(a.Sinks, b.Sinks);
    public override double[] Scores(RefHead head, RefContext c) => b.Scores(head, c);

    public override bool[] Select(RefHead[] heads, RefContext c, int k, ISet<int> near)
    {
        int first = Math.Clamp((int)Math.Round(share * k), Math.Min(c.Sinks, k), k);
        var kept = a.Select(heads, c, first, near);
        var scores = b.SummedScores(heads, c);
        for (int s = 0; s < scores.Length; s++) if (kept[s]) scores[s] = double.NegativeInfinity;
        var rest = RefTopK.Select(scores, 0, k - first, near);
        for (int s = 0; s < kept.Length; s++) kept[s] |= rest[s];
        return kept;
    }
}
