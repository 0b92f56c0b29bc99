namespace Kvq.Cache.Offload;

/// <summary>
/// Picks the blocks one KV head's attention reads for a chunk of queries under a <see cref="KvOffloadBudget"/>: the
/// sink blocks and the recent window always, then the remaining budget by the largest upper bound of q·k over the
/// chunk's query rows (<see cref="BlockSummaries"/>). Per layer, per KV head, per chunk of queries (a decode step is a
/// chunk of one token): what Quest does per step, with a KV head's query heads (GQA) sharing one choice.
/// </summary>
public sealed class BlockSelector(KvOffloadBudget budget, BlockSummaries summaries)
{
    public KvOffloadBudget Budget => budget;

    public BlockSummaries Summaries => summaries;

    /// <summary>Writes the chosen block indices (logical, ascending) into <paramref name="chosen"/> and returns how many.</summary>
    /// <param name="qs">(nq, headDim) query rows, as attention scores them.</param>
    /// <param name="firstVisible">Tokens the chunk's first query sees (its own included).</param>
    /// <param name="lastVisible">Tokens the chunk's last query sees.</param>
    /// <param name="bounds">Scratch of at least the visible blocks; <paramref name="order"/> too.</param>
    public int Select(int layer, int head, ReadOnlySpan<float> qs, int nq, int firstVisible, int lastVisible, Span<int> chosen,
        Span<float> bounds, Span<int> order)
    {
        int bt = summaries.BlockTokens;
        int visible = (lastVisible + bt - 1) / bt;
        int take = budget.BlocksFor(visible);
        int sinkEnd = Math.Min(visible, (budget.SinkTokens + bt - 1) / bt);                  // blocks [0, sinkEnd) always
        int recentStart = Math.Max(sinkEnd, Math.Max(0, firstVisible - budget.RecentTokens) / bt);  // blocks [recentStart, visible) always
        int candidates = recentStart - sinkEnd;
        int extra = Math.Min(candidates, Math.Max(0, take - sinkEnd - (visible - recentStart)));
        if (extra == candidates)
        {
            for (int b = 0; b < visible; b++) chosen[b] = b;
            return visible;
        }
        int n = 0;
        for (int b = 0; b < sinkEnd; b++) chosen[n++] = b;
        if (extra > 0)
        {
            var bs = bounds[..candidates];
            var idx = order[..candidates];
            for (int i = 0; i < candidates; i++)
            {
                int b = sinkEnd + i;
                // Negated, so an ascending sort puts the largest bound first.
                bs[i] = -summaries.UpperBound(layer, head, b, qs, nq);
                idx[i] = b;
            }
            bs.Sort(idx);
            var top = idx[..extra];
            top.Sort();
            foreach (int b in top) chosen[n++] = b;
        }
        for (int b = recentStart; b < visible; b++) chosen[n++] = b;
        return n;
    }
}
