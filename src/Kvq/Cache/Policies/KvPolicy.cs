namespace Kvq.Cache.Policies;

/// <summary>
/// A token policy (kvpress's "press"): decides which token slots of a layer's cache stay, go or merge when the cache
/// holds more tokens than its budget. Policies never touch bytes; codecs decide how the kept tokens are stored, so any
/// policy works with any per-token codec. The cache calls a policy between chunks (after a prefill chunk or a decode
/// step is committed), never inside one, so the causal mask by slot index stays right.
/// <para>
/// Most policies only write a score per slot (<see cref="Score"/>, higher = more worth keeping); the cache keeps the
/// sinks and the top-k slots by score (<see cref="SlotSelector"/>). Wrappers (PyramidKV budgets, merging, composition)
/// take another policy and override <see cref="LayerBudget"/>, <see cref="Select"/> or <see cref="BeforeEviction"/>.
/// A policy holds no per-sequence state: what it reads (positions, attention, keys) lives with the sequence and comes
/// through <see cref="IPolicyView"/>, so one instance serves every sequence of a cache.
/// </para>
/// </summary>
public abstract class KvPolicy
{
    /// <summary>The spec this policy was made from (as the CLI takes it), e.g. "h2o:recent=0.5"; set by the registry.</summary>
    public string Name { get; internal set; }

    protected KvPolicy(string name) => Name = name;

    /// <summary>How many of a chunk's last queries the cache must report attention for (<see cref="IPolicyView.Attention"/>):
    /// 0 = none (the default: no extra work), <see cref="int.MaxValue"/> = every query.</summary>
    public virtual int ObservedQueries => 0;

    /// <summary>Whether reported attention adds up over chunks (H2O's accumulated attention) rather than being that of the
    /// last chunk only (SnapKV's observation window, TOVA's last query).</summary>
    public virtual bool AccumulatesAttention => false;

    /// <summary>Leading tokens of the sequence always kept (attention sinks), besides the cache's exact-copy sinks.</summary>
    public virtual int SinkTokens => 0;

    /// <summary>Whether this policy merges evicted tokens into kept ones: slots then carry a log-weight (the log of the
    /// number of tokens a slot stands for) that attention adds to their scores.</summary>
    public virtual bool Merges => false;

    /// <summary>Tokens layer <paramref name="layer"/> keeps when the average over layers is <paramref name="average"/>
    /// (uniform unless a wrapper such as PyramidKV spreads them).</summary>
    public virtual int LayerBudget(int layer, int layers, int average) => average;

    /// <summary>Writes a score for each slot [0, view.Count(layer)) of one KV head; higher = keep.</summary>
    public abstract void Score(IPolicyView view, int layer, int head, Span<float> scores);

    /// <summary>
    /// Marks the <paramref name="keep"/> slots that stay in one KV head (<paramref name="head"/> &gt;= 0) or in every
    /// head of the layer at once (<paramref name="head"/> = -1: the heads' scores are summed and they keep the same
    /// tokens). Sinks are always kept. The default keeps the top-k by <see cref="Score"/>.
    /// </summary>
    public virtual void Select(IPolicyView view, int layer, int head, int keep, Span<bool> kept)
    {
        var scores = view.Scratch(layer);
        ScoreScoped(view, layer, head, scores);
        SlotSelector.TopK(scores, view.Sinks(layer, head), keep, kept);
    }

    /// <summary>Called for each KV head after <see cref="Select"/> and before the evicted slots are dropped (merging
    /// folds them into kept slots here). The default does nothing.</summary>
    public virtual void BeforeEviction(IPolicyEditor editor, int layer, int head, ReadOnlySpan<bool> kept) { }

    /// <summary>Scores of one head, or the sum over the layer's heads for <paramref name="head"/> = -1.</summary>
    protected void ScoreScoped(IPolicyView view, int layer, int head, Span<float> scores)
    {
        if (head >= 0) { Score(view, layer, head, scores); return; }
        Score(view, layer, 0, scores);
        if (view.KvHeads == 1) return;
        var one = view.Scratch2(layer);
        for (int h = 1; h < view.KvHeads; h++)
        {
            Score(view, layer, h, one);
            System.Numerics.Tensors.TensorPrimitives.Add(scores, one, scores);
        }
    }

    public override string ToString() => Name;
}
