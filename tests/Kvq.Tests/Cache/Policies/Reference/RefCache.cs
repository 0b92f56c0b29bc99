namespace Kvq.Tests.Cache.Policies.Reference;

/// <summary>The slots a layer should keep after a chunk: per KV head, by slot of the reference's heads, the reference
/// scores' top-k (<see cref="Scores"/>: the scores, summed over heads in layer scope); <see cref="Near"/> holds the slots within a float rounding of a boundary.</summary>
internal sealed record RefDecision(bool[][] Kept, double[][] Scores, HashSet<int> Near, RefContext Context);

/// <summary>
/// A whole reference cache under a <see cref="RefPolicy"/> (no RoPE, exact keys): appends chunks, observes the
/// attention the policy reads, and after each committed chunk decides per layer which slots stay, then merges and
/// compacts them the way it is told (the cache's own choice, once checked against the decision).
/// </summary>
internal sealed class RefCache
{
    private readonly RefPolicy _policy;
    private readonly int _group, _headDim, _cacheSinks;
    private readonly double _budget;
    public readonly RefHead[][] Heads; // [layer][KV head]
    public int Length { get; private set; }

    /// <param name="budget">Average tokens kept per layer: a fraction of the tokens seen below 1, else a count.</param>
    /// <param name="cacheSinks">Leading tokens the cache keeps exactly in f16 (their keys read rounded to f16).</param>
    public RefCache(RefPolicy policy, int layers, int kvHeads, int group, int headDim, double budget, int cacheSinks)
    {
        _policy = policy;
        _group = group;
        _headDim = headDim;
        _budget = budget;
        _cacheSinks = cacheSinks;
        Heads = new RefHead[layers][];
        for (int l = 0; l < layers; l++)
        {
            Heads[l] = new RefHead[kvHeads];
            for (int h = 0; h < kvHeads; h++) Heads[l][h] = new RefHead();
        }
    }

    /// <summary>Appends a chunk's keys, (n, KvDim), to a layer and observes its queries, (n, QDim).</summary>
    public void AppendAndObserve(int layer, float[] keys, float[] queries, int n)
    {
        var heads = Heads[layer];
        for (int t = 0; t < n; t++)
            for (int h = 0; h < heads.Length; h++)
            {
                var key = new double[_headDim];
                for (int d = 0; d < _headDim; d++)
                {
                    float x = keys[(t * heads.Length + h) * _headDim + d];
                    key[d] = Length + t < _cacheSinks ? (float)(Half)x : x;
                }
                heads[h].Append(Length + t, key);
            }
        if (_policy.Observed == 0) return;
        int obs = Math.Min(n, _policy.Observed), qDim = heads.Length * _group * _headDim;
        double scale = 1 / Math.Sqrt(_headDim);
        for (int h = 0; h < heads.Length; h++)
        {
            if (!_policy.Accumulates) for (int s = 0; s < heads[h].Count; s++) heads[h].Attention[s] = 0;
            for (int t = n - obs; t < n; t++)
                for (int j = 0; j < _group; j++)
                    heads[h].Observe(queries.AsSpan(t * qDim + (h * _group + j) * _headDim, _headDim), scale, heads[h].Count - n + t + 1);
        }
    }

    public void Commit(int n) => Length += n;

    /// <summary>The decision for a layer after a commit of <paramref name="chunk"/> tokens, or null when it is within budget.</summary>
    public RefDecision? Decide(int layer, int chunk, bool layerScope)
    {
        var heads = Heads[layer];
        int count = heads[0].Count;
        int average = _budget < 1 ? (int)Math.Ceiling(_budget * Length) : (int)_budget;
        int sinks = Math.Min(count, Math.Max(_cacheSinks, _policy.Sinks));
        int keep = Math.Max(_policy.LayerBudget(layer, Heads.Length, average), sinks + 1);
        if (count <= keep) return null;
        var c = new RefContext(Length, chunk, keep, sinks);
        var near = new HashSet<int>();
        var kept = new bool[heads.Length][];
        var scores = new double[heads.Length][];
        for (int h = 0; h < heads.Length; h++)
        {
            RefHead[] scoped = layerScope ? heads : [heads[h]];
            kept[h] = layerScope && h > 0 ? kept[0] : _policy.Select(scoped, c, keep, near);
            scores[h] = _policy.SummedScores(scoped, c);
        }
        return new RefDecision(kept, scores, near, c);
    }

    /// <summary>Keeps the given slots of one head (merging the others into them first when the policy merges).</summary>
    public void Apply(int layer, int head, bool[] kept, RefContext c)
    {
        var h = Heads[layer][head];
        if (_policy.MergeThreshold is { } threshold) h.Merge(kept, c.Sinks, threshold);
        h.Compact(kept);
    }
}
