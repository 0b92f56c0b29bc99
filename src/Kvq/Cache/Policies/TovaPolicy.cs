namespace Kvq.Cache.Policies;

/// <summary>
/// TOVA (Oren et al., "Transformers are Multi-State RNNs", arXiv:2401.06104): keep the tokens the current (last) query
/// attends to most, summed over the KV head's query heads (with --budget-per layer, over all heads of the layer, as in
/// the paper). A cheap attention baseline: one query per chunk is observed.
/// Args: sink=0.
/// </summary>
public sealed class TovaPolicy(int sinks) : KvPolicy("tova")
{
    public override int ObservedQueries => 1;
    public override int SinkTokens => sinks;

    public override void Score(IPolicyView view, int layer, int head, Span<float> scores)
    {
        view.Attention(layer, head).CopyTo(scores);
    }

    public static TovaPolicy Create(PolicyArgs a)
    {
        var p = new TovaPolicy(a.Int("sink", 0, 0));
        a.CheckAllUsed("sink");
        return p;
    }
}
