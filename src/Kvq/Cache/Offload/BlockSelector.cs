namespace Kvq.Cache.Offload;

/// <summary>
/// Picks the blocks one KV head's attention reads for a chunk of queries under a <see cref="KvOffloadBudget"/>: the
/// sink blocks and the recent window always, then the remaining budget by the budget's <see cref="BlockRule"/> over the
/// chunk's query rows (<see cref="BlockSummaries"/>). Per layer, per KV head, per chunk of queries (a decode step is a
/// chunk of one token): what Quest does per step, with a KV head's query heads (GQA) sharing one choice. Equal scores
/// go to the lower block index, so the choice depends only on the inputs.
/// </summary>
public sealed class BlockSelector(KvOffloadBudget budget, BlockSummaries summaries)
{
    [ThreadStatic] private static float[]? _estimates;
    [ThreadStatic] private static float[]? _covered;

    /// <summary>The selector of a sequence in a cache with <see cref="KvCacheConfig.Offload"/> (empty summaries); null without.</summary>
    public static BlockSelector? For(KvCacheConfig config, KvShape shape) => config.Offload is { } offload
        ? new BlockSelector(offload, new BlockSummaries(shape.Layers, shape.KvHeads, shape.HeadDim, config.BlockTokens, offload.BoxTokens))
        : null;

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
        int take = budget.BlocksFor(visible, layer, summaries.Layers);
        int sinkEnd = Math.Min(visible, (budget.SinkTokens + bt - 1) / bt);                  // blocks [0, sinkEnd) always
        int recentStart = Math.Max(sinkEnd, Math.Max(0, firstVisible - budget.RecentTokens) / bt);  // blocks [recentStart, visible) always
        int candidates = recentStart - sinkEnd;
        int extra = Math.Min(candidates, Math.Max(0, take - sinkEnd - (visible - recentStart)));
        if (extra == candidates && (budget.Rule == BlockRule.Bound || budget.Cover >= 100))
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
            if (budget.Rule != BlockRule.Bound)
                extra = MassScores(layer, head, qs, nq, lastVisible, sinkEnd, recentStart, extra, bs);
            else if (budget.Spread >= 100)
                for (int i = 0; i < candidates; i++)
                    bs[i] = summaries.UpperBound(layer, head, sinkEnd + i, qs, nq);
            else
                LargestEstimates(layer, head, qs, nq, lastVisible, sinkEnd, bs);
            for (int i = 0; i < candidates; i++)
            {
                bs[i] = -bs[i];   // negated, so an ascending sort puts the largest score first
                idx[i] = sinkEnd + i;
            }
            bs.Sort(idx);
            // Runs of equal scores in block order: the lower index wins a tie at the cut.
            for (int i = 0; i < extra;)
            {
                int j = i + 1;
                while (j < candidates && bs[j] == bs[i]) j++;
                if (j - i > 1) idx[i..j].Sort();
                i = j;
            }
            var top = idx[..extra];
            top.Sort();
            foreach (int b in top) chosen[n++] = b;
        }
        for (int b = recentStart; b < visible; b++) chosen[n++] = b;
        return n;
    }

    /// <summary>The bound rule below spread 100: each candidate's largest estimate over the rows.</summary>
    private void LargestEstimates(int layer, int head, ReadOnlySpan<float> qs, int nq, int lastVisible, int sinkEnd, Span<float> scores)
    {
        int bt = summaries.BlockTokens;
        if (_covered == null || _covered.Length < 2 * nq) _covered = new float[2 * nq];
        var rows = _covered.AsSpan(0, nq);
        for (int i = 0; i < scores.Length; i++)
        {
            int b = sinkEnd + i;
            summaries.RowEstimates(layer, head, b, Math.Min(bt, lastVisible - b * bt), qs, nq, budget.Spread / 100f, rows);
            float best = float.NegativeInfinity;
            foreach (float e in rows) best = MathF.Max(best, e);
            scores[i] = best;
        }
    }

    /// <summary>The mass rule: writes each candidate block's score (the largest estimated share of a row's softmax mass)
    /// into <paramref name="scores"/> and returns how many of the best to add: <paramref name="extra"/>, or fewer when
    /// the budget's coverage is reached first.</summary>
    private int MassScores(int layer, int head, ReadOnlySpan<float> qs, int nq, int lastVisible, int sinkEnd, int recentStart,
        int extra, Span<float> scores)
    {
        int bt = summaries.BlockTokens;
        int visible = (lastVisible + bt - 1) / bt;
        int candidates = recentStart - sinkEnd;
        if (_estimates == null || _estimates.Length < nq * visible) _estimates = new float[Math.Max(nq * visible, 2 * (_estimates?.Length ?? 0))];
        if (_covered == null || _covered.Length < nq + nq) _covered = new float[2 * nq];
        var est = _estimates.AsSpan(0, nq * visible);    // (visible, nq): block b's row estimates, then shares
        var rowMax = _covered.AsSpan(0, nq);
        var rowSum = _covered.AsSpan(nq, nq);
        float spread = budget.Spread / 100f;
        for (int b = 0; b < visible; b++)
            summaries.RowEstimates(layer, head, b, Math.Min(bt, lastVisible - b * bt), qs, nq, spread, est.Slice(b * nq, nq));
        rowMax.Fill(float.NegativeInfinity);
        for (int b = 0; b < visible; b++)
            for (int r = 0; r < nq; r++) rowMax[r] = MathF.Max(rowMax[r], est[b * nq + r]);
        rowSum.Clear();
        for (int b = 0; b < visible; b++)
        {
            float tokens = Math.Min(bt, lastVisible - b * bt);
            for (int r = 0; r < nq; r++)
            {
                float w = tokens * MathF.Exp(est[b * nq + r] - rowMax[r]);
                est[b * nq + r] = w;
                rowSum[r] += w;
            }
        }
        for (int b = 0; b < visible; b++)
            for (int r = 0; r < nq; r++) est[b * nq + r] /= rowSum[r];
        for (int i = 0; i < candidates; i++)
        {
            var share = est.Slice((sinkEnd + i) * nq, nq);
            float best = 0;
            if (budget.Rule == BlockRule.Total)
                foreach (float p in share) best += p / nq;
            else
                foreach (float p in share) best = MathF.Max(best, p);
            scores[i] = best;
        }
        if (budget.Cover >= 100) return extra;
        // Coverage: each row's forced share, then the blocks in score order until every row reaches the target.
        var covered = rowMax;
        covered.Clear();
        for (int b = 0; b < visible; b++)
        {
            if (b >= sinkEnd && b < recentStart) continue;
            for (int r = 0; r < nq; r++) covered[r] += est[b * nq + r];
        }
        float target = budget.Cover / 100f;
        for (int added = 0; ; added++)
        {
            float least = float.PositiveInfinity;
            foreach (float c in covered) least = MathF.Min(least, c);
            if (least >= target || added == extra) return added;
            // The next block in the order Select sorts by: the highest score, the lower index on a tie.
            int next = -1;
            for (int i = 0; i < candidates; i++)
                if (scores[i] <= 1.5f && (next < 0 || scores[i] > scores[next])) next = i;
            for (int r = 0; r < nq; r++) covered[r] += est[(sinkEnd + next) * nq + r];
            scores[next] = 2 + scores[next];   // taken: above every share (<= 1), so Select's sort puts it first
        }
    }
}
