using System.Buffers;

namespace Kvq.Cache.Policies;

/// <summary>
/// Two policies sharing one budget (in the spirit of kvpress's ComposedPress, for a cache compressed at every
/// chunk): the first keeps <c>share</c> of the budget by its own choice, the second fills the rest from the slots the
/// first left. E.g. compose:knorm+h2o keeps half the budget by key norm and half by accumulated attention; H2O itself
/// is such a pair (recent window + heavy hitters). Chaining instead (A narrows to a multiple of the budget, B cuts to
/// it) would do nothing here: a cache trimmed after every chunk never holds more than the budget plus one chunk.
/// Both read the same attention statistics, so an accumulating policy (h2o) cannot be composed with a windowed one
/// (snapkv, tova). Per-layer budgets and merging come from the second.
/// Spec: compose[:share=0.5,]A+B.
/// </summary>
public sealed class ComposedPolicy : KvPolicy
{
    private readonly KvPolicy _a, _b;
    private readonly double _share;

    public ComposedPolicy(KvPolicy a, KvPolicy b, double share) : base("compose")
    {
        if (a.ObservedQueries > 0 && b.ObservedQueries > 0 && a.AccumulatesAttention != b.AccumulatesAttention)
            throw new KvSpecException($"policy 'compose': {a.Name} and {b.Name} read attention differently (accumulated over " +
                                      "every query vs the last chunk's); compose one of them with a policy that reads no attention");
        _a = a;
        _b = b;
        _share = share;
    }

    public override int ObservedQueries => Math.Max(_a.ObservedQueries, _b.ObservedQueries);
    public override bool AccumulatesAttention => _a.AccumulatesAttention || _b.AccumulatesAttention;
    public override int SinkTokens => Math.Max(_a.SinkTokens, _b.SinkTokens);
    public override bool Merges => _b.Merges;
    public override int LayerBudget(int layer, int layers, int average) => _b.LayerBudget(layer, layers, average);
    public override void Score(IPolicyView view, int layer, int head, Span<float> scores) => _b.Score(view, layer, head, scores);

    public override void Select(IPolicyView view, int layer, int head, int keep, Span<bool> kept)
    {
        int n = view.Count(layer), sinks = view.Sinks(layer, head);
        int first = Math.Clamp((int)Math.Round(_share * keep), Math.Min(sinks, keep), keep);
        _a.Select(view, layer, head, first, kept);
        // The second chooses the rest among the slots the first left (those it kept score -inf, so they are not chosen twice).
        var scores = view.Scratch(layer);
        ScoreScoped(view, layer, head, scores);
        for (int s = 0; s < n; s++) if (kept[s]) scores[s] = float.NegativeInfinity;
        var rest = ArrayPool<bool>.Shared.Rent(n);
        try
        {
            SlotSelector.TopK(scores, 0, keep - first, rest.AsSpan(0, n));
            for (int s = 0; s < n; s++) kept[s] |= rest[s];
        }
        finally { ArrayPool<bool>.Shared.Return(rest); }
    }

    public override void BeforeEviction(IPolicyEditor editor, int layer, int head, ReadOnlySpan<bool> kept) =>
        _b.BeforeEviction(editor, layer, head, kept);
}
