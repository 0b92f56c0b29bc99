namespace Kvq.Cache.Policies;

/// <summary>
/// Two policies in sequence (kvpress's ComposedPress): the first narrows the slots to <c>first</c> x the budget, the
/// second keeps the budget among those. E.g. compose:knorm+h2o lets a cheap key-norm filter drop the obvious tokens
/// before H2O's heavy hitters choose. Both read the same attention statistics, so an accumulating policy (h2o) cannot
/// be composed with a windowed one (snapkv, tova). Per-layer budgets and merging come from the second.
/// Spec: compose[:first=2,]A+B.
/// </summary>
public sealed class ComposedPolicy : KvPolicy
{
    private readonly KvPolicy _a, _b;
    private readonly double _first;

    public ComposedPolicy(KvPolicy a, KvPolicy b, double first) : base("compose")
    {
        if (a.ObservedQueries > 0 && b.ObservedQueries > 0 && a.AccumulatesAttention != b.AccumulatesAttention)
            throw new KvSpecException($"policy 'compose': {a.Name} and {b.Name} read attention differently (accumulated over " +
                                      "every query vs the last chunk's); compose one of them with a policy that reads no attention");
        _a = a;
        _b = b;
        _first = first;
    }

    public override int ObservedQueries => Math.Max(_a.ObservedQueries, _b.ObservedQueries);
    public override bool AccumulatesAttention => _a.AccumulatesAttention || _b.AccumulatesAttention;
    public override int SinkTokens => Math.Max(_a.SinkTokens, _b.SinkTokens);
    public override bool Merges => _b.Merges;
    public override int LayerBudget(int layer, int layers, int average) => _b.LayerBudget(layer, layers, average);
    public override void Score(IPolicyView view, int layer, int head, Span<float> scores) => _b.Score(view, layer, head, scores);

    public override void Select(IPolicyView view, int layer, int head, int keep, Span<bool> kept)
    {
        int n = view.Count(layer);
        int wide = (int)Math.Min(n, Math.Ceiling(_first * keep));
        _a.Select(view, layer, head, wide, kept);
        // The second chooses among the first's survivors: the others score -inf (never above a survivor).
        var scores = view.Scratch(layer);
        ScoreScoped(view, layer, head, scores);
        for (int s = 0; s < n; s++) if (!kept[s]) scores[s] = float.NegativeInfinity;
        SlotSelector.TopK(scores, view.Sinks(layer, head), keep, kept);
    }

    public override void BeforeEviction(IPolicyEditor editor, int layer, int head, ReadOnlySpan<bool> kept) =>
        _b.BeforeEviction(editor, layer, head, kept);
}
