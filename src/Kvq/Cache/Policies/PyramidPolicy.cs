namespace Kvq.Cache.Policies;

/// <summary>
/// PyramidKV budgets (Cai et al., "PyramidKV: Dynamic KV Cache Compression based on Pyramidal Information Funneling",
/// arXiv:2406.02069): lower layers attend broadly and keep more tokens, upper layers focus and keep fewer. Budgets form
/// an arithmetic sequence from 2a - a/beta at layer 0 to a/beta at the top layer (a = the average budget), so the total
/// is that of a uniform budget. Which tokens each layer keeps is the wrapped policy's choice (SnapKV in the paper).
/// Spec: pyramid[:beta=20,]INNER (default inner: snapkv).
/// </summary>
public sealed class PyramidPolicy(KvPolicy inner, double beta) : KvPolicy("pyramid")
{
    public KvPolicy Inner => inner;
    public override int ObservedQueries => inner.ObservedQueries;
    public override bool AccumulatesAttention => inner.AccumulatesAttention;
    public override int SinkTokens => inner.SinkTokens;
    public override bool Merges => inner.Merges;

    public override int LayerBudget(int layer, int layers, int average)
    {
        if (layers == 1) return average;
        double top = average / beta, bottom = 2.0 * average - top;
        return Math.Max(1, (int)Math.Round(bottom - (bottom - top) * layer / (layers - 1)));
    }

    public override void Score(IPolicyView view, int layer, int head, Span<float> scores) => inner.Score(view, layer, head, scores);
    public override void Select(IPolicyView view, int layer, int head, int keep, Span<bool> kept) => inner.Select(view, layer, head, keep, kept);
    public override void BeforeEviction(IPolicyEditor editor, int layer, int head, ReadOnlySpan<bool> kept) => inner.BeforeEviction(editor, layer, head, kept);
}
