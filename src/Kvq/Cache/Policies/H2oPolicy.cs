namespace Kvq.Cache.Policies;

/// <summary>
/// H2O (Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models",
/// arXiv:2306.14048): keep the heavy hitters, the tokens with the largest attention accumulated over every query so far
/// (summed over the KV head's query heads), plus a window of recent tokens (which have had few queries to collect it).
/// Args: recent=0.5 (fraction of the budget below 1, or tokens), sink=0.
/// </summary>
public sealed class H2oPolicy(double recent, int sinks) : KvPolicy("h2o")
{
    public override int ObservedQueries => int.MaxValue;
    public override bool AccumulatesAttention => true;
    public override int SinkTokens => sinks;

    public override void Score(IPolicyView view, int layer, int head, Span<float> scores)
    {
        view.Attention(layer, head).CopyTo(scores);
        RecentWindow.Protect(view.Positions(layer, head), view.Length, RecentWindow.Tokens(recent, view.Keep(layer)), scores);
    }

    public static H2oPolicy Create(PolicyArgs a)
    {
        var p = new H2oPolicy(a.Double("recent", 0.5, 0, 1e9), a.Int("sink", 0, 0));
        a.CheckAllUsed("recent", "sink");
        return p;
    }
}
