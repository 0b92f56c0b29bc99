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
        var plan = Plan(budget, layer, summaries.Layers, bt, firstVisible, lastVisible);
        if (plan.All) return Identity(plan.Visible, chosen);
        if (plan.Extra > 0 && budget.Rule == BlockRule.Bound && budget.Spread >= 100)
        {
            var bs = bounds[..plan.Candidates];
            for (int i = 0; i < bs.Length; i++)
                bs[i] = summaries.UpperBound(layer, head, plan.SinkEnd + i, qs, nq);
            return Finish(plan, plan.Extra, bs, chosen);
        }
        if (_estimates == null || _estimates.Length < nq * plan.Visible) _estimates = new float[Math.Max(nq * plan.Visible, 2 * (_estimates?.Length ?? 0))];
        var est = _estimates.AsSpan(0, nq * plan.Visible);
        if (plan.Extra > 0)
        {
            float spread = budget.Spread / 100f;
            for (int b = 0; b < plan.Visible; b++)
                summaries.RowEstimates(layer, head, b, Math.Min(bt, lastVisible - b * bt), qs, nq, spread, est.Slice(b * nq, nq));
        }
        return Rank(budget, plan, est, nq, lastVisible, bt, chosen, bounds, order);
    }

    /// <summary>Which blocks a chunk must read and how many more the budget adds: blocks [0, <see cref="SelectionPlan.SinkEnd"/>)
    /// (the sink) and [<see cref="SelectionPlan.RecentStart"/>, <see cref="SelectionPlan.Visible"/>) (the recent window and
    /// the chunk) always, <see cref="SelectionPlan.Extra"/> of the candidates between them by the rule; <see cref="SelectionPlan.All"/>
    /// when that is every block. Shared by the CPU cache and the device's host tier (Kvq.Cuda Offload).</summary>
    public static SelectionPlan Plan(KvOffloadBudget budget, int layer, int layers, int blockTokens, int firstVisible, int lastVisible)
    {
        int bt = blockTokens;
        int visible = (lastVisible + bt - 1) / bt;
        int take = budget.BlocksFor(visible, layer, layers);
        int sinkEnd = Math.Min(visible, (budget.SinkTokens + bt - 1) / bt);                  // blocks [0, sinkEnd) always
        int recentStart = Math.Max(sinkEnd, Math.Max(0, firstVisible - budget.RecentTokens) / bt);  // blocks [recentStart, visible) always
        int candidates = recentStart - sinkEnd;
        int extra = Math.Min(candidates, Math.Max(0, take - sinkEnd - (visible - recentStart)));
        bool all = extra == candidates && (budget.Rule == BlockRule.Bound || budget.Cover >= 100);
        return new SelectionPlan(visible, sinkEnd, recentStart, extra, all);
    }

    /// <summary>Every visible block, in order.</summary>
    public static int Identity(int visible, Span<int> chosen)
    {
        for (int b = 0; b < visible; b++) chosen[b] = b;
        return visible;
    }

    /// <summary>
    /// The choice from per-block row estimates (<see cref="BlockSummaries.RowEstimates"/>'s formula, computed here or on a
    /// device): <paramref name="est"/> holds (visible blocks, nq rows) and is overwritten (the mass rule's shares). The
    /// rule ranks the candidates, then the forced blocks and the best <see cref="SelectionPlan.Extra"/> (or fewer under
    /// coverage) go to <paramref name="chosen"/>, ascending. The one ranking code for the CPU cache and the device's host
    /// tier (Kvq.Cuda Offload/OffloadedKvSequence), so both choose alike from the same estimates.
    /// </summary>
    public static int Rank(KvOffloadBudget budget, SelectionPlan plan, Span<float> est, int nq, int lastVisible, int blockTokens,
        Span<int> chosen, Span<float> scores, Span<int> order)
    {
        if (plan.All) return Identity(plan.Visible, chosen);
        int extra = plan.Extra;
        var bs = scores[..plan.Candidates];
        if (extra > 0)
        {
            if (budget.Rule != BlockRule.Bound)
                extra = MassScores(budget, est, nq, lastVisible, blockTokens, plan, bs);
            else
                for (int i = 0; i < bs.Length; i++)
                {
                    var rows = est.Slice((plan.SinkEnd + i) * nq, nq);
                    float best = float.NegativeInfinity;
                    foreach (float e in rows) best = MathF.Max(best, e);
                    bs[i] = best;
                }
        }
        return Finish(plan, extra, bs, chosen);
    }

    /// <summary>The forced blocks and the <paramref name="extra"/> candidates of highest score (the lower index on a tie),
    /// ascending. The cut is found by selection (the extra-th largest score, expected linear time) rather than a sort of
    /// every candidate: the device tier ranks ~15,000 blocks per KV head and layer at 2M tokens, every decode step.</summary>
    private static int Finish(SelectionPlan plan, int extra, Span<float> bs, Span<int> chosen)
    {
        int n = 0;
        for (int b = 0; b < plan.SinkEnd; b++) chosen[n++] = b;
        if (extra > 0)
        {
            int candidates = plan.Candidates;
            if (_cut == null || _cut.Length < candidates) _cut = new float[Math.Max(candidates, 2 * (_cut?.Length ?? 0))];
            var work = _cut.AsSpan(0, candidates);
            bs[..candidates].CopyTo(work);
            float cut = KthLargest(work, extra - 1);
            // Above the cut: all; at the cut: the lowest indices, as many as the budget has left.
            int above = 0;
            for (int i = 0; i < candidates; i++) if (bs[i] > cut) above++;
            int ties = extra - above;
            for (int i = 0; i < candidates; i++)
            {
                if (bs[i] > cut) chosen[n++] = plan.SinkEnd + i;
                else if (bs[i] == cut && ties > 0)
                {
                    chosen[n++] = plan.SinkEnd + i;
                    ties--;
                }
            }
        }
        for (int b = plan.RecentStart; b < plan.Visible; b++) chosen[n++] = b;
        return n;
    }

    [ThreadStatic] private static float[]? _cut;

    /// <summary>The value that would sit at index <paramref name="k"/> of <paramref name="a"/> sorted descending
    /// (quickselect with a median-of-three pivot; <paramref name="a"/> is permuted).</summary>
    private static float KthLargest(Span<float> a, int k)
    {
        int lo = 0, hi = a.Length - 1;
        while (hi > lo)
        {
            int mid = lo + (hi - lo) / 2;
            float x = a[lo], y = a[mid], z = a[hi];
            float pivot = x > y ? (y > z ? y : x > z ? z : x) : (x > z ? x : y > z ? z : y);
            int i = lo, j = hi;
            while (i <= j)
            {
                while (a[i] > pivot) i++;
                while (a[j] < pivot) j--;
                if (i <= j)
                {
                    (a[i], a[j]) = (a[j], a[i]);
                    i++;
                    j--;
                }
            }
            if (k <= j) hi = j;
            else if (k >= i) lo = i;
            else return a[k];
        }
        return a[k];
    }

    /// <summary>The mass rule: from the row estimates <paramref name="est"/> (visible, nq) of every visible block, writes
    /// each candidate block's score (the largest estimated share of a row's softmax mass) into <paramref name="scores"/>
    /// and returns how many of the best to add: the plan's extra, or fewer when the budget's coverage is reached first.</summary>
    private static int MassScores(KvOffloadBudget budget, Span<float> est, int nq, int lastVisible, int bt, SelectionPlan plan, Span<float> scores)
    {
        int visible = plan.Visible, sinkEnd = plan.SinkEnd, recentStart = plan.RecentStart, extra = plan.Extra;
        int candidates = recentStart - sinkEnd;
        if (_covered == null || _covered.Length < nq + nq) _covered = new float[2 * nq];
        est = est[..(nq * visible)];                      // (visible, nq): block b's row estimates, then shares
        var rowMax = _covered.AsSpan(0, nq);
        var rowSum = _covered.AsSpan(nq, nq);
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

/// <summary>A chunk's forced blocks and budget (<see cref="BlockSelector.Plan"/>).</summary>
/// <param name="Visible">Blocks the chunk's last query sees.</param>
/// <param name="SinkEnd">Blocks [0, SinkEnd) are always read.</param>
/// <param name="RecentStart">Blocks [RecentStart, Visible) are always read.</param>
/// <param name="Extra">Candidates (between them) the budget adds.</param>
/// <param name="All">Every visible block is read.</param>
public readonly record struct SelectionPlan(int Visible, int SinkEnd, int RecentStart, int Extra, bool All)
{
    public int Candidates => RecentStart - SinkEnd;
}
