namespace Kvq.Cache.Policies;

/// <summary>
/// SnapKV (Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation", arXiv:2404.14469): the last
/// <c>window</c> queries of the prompt (the observation window) vote for the tokens they attend to; the votes are
/// smoothed by average pooling over <c>pool</c> neighbouring slots (keeping whole phrases), the top ones stay, and the
/// window itself always stays. Applied after every chunk, the observation window is the end of that chunk (in decode,
/// a chunk of one: the latest query).
/// Args: window=32, pool=7 (odd, 1 = no pooling), sink=0.
/// </summary>
public sealed class SnapKvPolicy(int window, int pool, int sinks) : KvPolicy("snapkv")
{
    public override int ObservedQueries => window;
    public override int SinkTokens => sinks;

    public override void Score(IPolicyView view, int layer, int head, Span<float> scores)
    {
        var att = view.Attention(layer, head);
        int n = att.Length, half = pool / 2;
        // Average pooling, same length ("same" padding: windows are cut at the ends and divided by the full kernel, as
        // avg_pool1d with count_include_pad does).
        double run = 0;
        for (int s = 0; s < Math.Min(half, n); s++) run += att[s];
        for (int s = 0; s < n; s++)
        {
            if (s + half < n) run += att[s + half];
            if (s - half - 1 >= 0) run -= att[s - half - 1];
            scores[s] = (float)(run / pool);
        }
        RecentWindow.Protect(view.Positions(layer, head), view.Length, Math.Min(window, view.ChunkTokens), scores);
    }

    public static SnapKvPolicy Create(PolicyArgs a)
    {
        int window = a.Int("window", 32, 1), pool = a.Int("pool", 7, 1);
        if (pool % 2 == 0) throw new KvSpecException($"policy 'snapkv': pool={pool} must be odd (a window centred on each slot)");
        var p = new SnapKvPolicy(window, pool, a.Int("sink", 0, 0));
        a.CheckAllUsed("window", "pool", "sink");
        return p;
    }
}
