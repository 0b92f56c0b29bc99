using Kvq.Cache;
using Kvq.Cache.Offload;

namespace Kvq.Tests.Cache.Offload;

/// <summary>The selector's ranking rules (bound, mass, total), box estimates, coverage and dense first layers: hand-made
/// cases whose answer can be checked by eye, and random inputs against a double-precision brute force.</summary>
public class BlockRuleTests
{
    private static float[] Gaussian(Random rng, int n, float scale = 1f)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = scale * (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return a;
    }

    private static int Select(BlockSelector s, int layer, float[] q, int nq, int firstVisible, int lastVisible, out int[] chosen)
    {
        int visible = (lastVisible + s.Summaries.BlockTokens - 1) / s.Summaries.BlockTokens;
        chosen = new int[visible];
        int n = s.Select(layer, 0, q, nq, firstVisible, lastVisible, chosen, new float[visible], new int[visible]);
        chosen = chosen[..n];
        return n;
    }

    /// <summary>7 blocks of 4 tokens (one box each, keys constant within a block, so every estimate is exact), no forced
    /// block, a budget of one. Row A (a diffuse head) scores 6 on blocks 1-6 and 6.1 on block 2; row B scores 4.8 on
    /// block 5 only. The bound rule takes block 2 (the largest score of any row); the mass rule takes block 5 (about
    /// 95% of row B's softmax mass, where block 2 holds about 17% of row A's).</summary>
    [Theory]
    [InlineData("1:rule=bound,spread=100", 2)]
    [InlineData("1", 5)]
    [InlineData("1:rule=mass", 5)]
    [InlineData("1:rule=mass,spread=0", 5)]
    [InlineData("1:rule=total", 5)]
    public void TheBlockWithTheBestScoreIsChosen(string budgetText, int expected)
    {
        int hd = 4, bt = 4;
        var sums = new BlockSummaries(1, 1, hd, bt, 4);
        for (int t = 0; t < 28; t++)
        {
            int b = t / bt;
            float k0 = b == 5 ? 1.2f : 0f;
            float k1 = b == 0 ? 0f : b == 2 ? 6.1f / 3 : 2f;
            sums.Add(0, 0, t, [k0, k1, 0.5f, -0.25f]);
        }
        var selector = new BlockSelector(KvOffloadBudget.Parse(budgetText) with { SinkTokens = 0, RecentTokens = 0 }, sums);
        float[] q = [0, 3, 0, 0, /* row B */ 4, 0, 0, 0];
        Select(selector, 0, q, 2, 28, 28, out var chosen);
        Assert.Equal([expected], chosen);
    }

    /// <summary>Every block the same: the budget goes to the lowest candidate indices, whatever the rule.</summary>
    [Theory]
    [InlineData("3")]
    [InlineData("3:rule=bound,spread=100")]
    [InlineData("3:rule=total,spread=40")]
    [InlineData("3:rule=bound,spread=40")]
    public void TiesGoToTheLowerBlock(string budgetText)
    {
        int hd = 8, bt = 4, tokens = 40;
        var rng = new Random(TestSeeds.Of(nameof(TiesGoToTheLowerBlock), budgetText));
        var keys = new float[bt][];
        for (int i = 0; i < bt; i++) keys[i] = Gaussian(rng, hd);
        var sums = new BlockSummaries(1, 1, hd, bt, 2);
        for (int t = 0; t < tokens; t++) sums.Add(0, 0, t, keys[t % bt]);
        var selector = new BlockSelector(KvOffloadBudget.Parse(budgetText) with { SinkTokens = 4, RecentTokens = 4 }, sums);
        // Forced: block 0 (sink) and block 9 (recent: tokens 36-39); the budget of 3 leaves one more.
        Select(selector, 0, Gaussian(rng, 3 * hd), 3, tokens, tokens, out var chosen);
        Assert.Equal([0, 1, 9], chosen);
        selector = new BlockSelector(KvOffloadBudget.Parse(budgetText.Replace("3", "6")) with { SinkTokens = 4, RecentTokens = 4 }, sums);
        Select(selector, 0, Gaussian(rng, 3 * hd), 3, tokens, tokens, out chosen);
        Assert.Equal([0, 1, 2, 3, 4, 9], chosen);
    }

    /// <summary>Random keys and queries, odd sizes, every rule: the choice holds the forced blocks, is ascending and
    /// distinct, never exceeds max(forced, budget) (with dense first layers too), and matches a double-precision brute
    /// force of the rule.</summary>
    [Theory]
    [InlineData("25%", 1)]
    [InlineData("25%:rule=bound,spread=100", 1)]
    [InlineData("25%:rule=mass,spread=35", 16)]
    [InlineData("0.1:rule=mass,spread=0", 5)]
    [InlineData("7:rule=total,spread=50", 3)]
    [InlineData("30%:rule=bound,spread=35", 7)]
    [InlineData("30%:rule=mass,spread=100", 7)]
    [InlineData("25%:rule=mass,spread=35,dense=1", 2)]
    [InlineData("20%:dense=2", 4)]
    public void ChoiceMatchesABruteForceOfTheRule(string budgetText, int nq)
    {
        int hd = 12, bt = 6, box = 3, layers = 3, tokens = 401;
        var budget = KvOffloadBudget.Parse(budgetText) with { SinkTokens = 5, RecentTokens = 17 };
        var rng = new Random(TestSeeds.Of(nameof(ChoiceMatchesABruteForceOfTheRule), budgetText, nq));
        var sums = new BlockSummaries(layers, 1, hd, bt, box);
        var keys = new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            keys[l] = Gaussian(rng, tokens * hd, 0.7f);
            for (int t = 0; t < tokens; t++) sums.Add(l, 0, t, keys[l].AsSpan(t * hd, hd));
        }
        var selector = new BlockSelector(budget, sums);
        for (int trial = 0; trial < 12; trial++)
        {
            int layer = trial % layers;
            int lastVisible = tokens - rng.Next(0, 40), firstVisible = lastVisible - rng.Next(0, 16);
            var q = Gaussian(rng, nq * hd);
            Select(selector, layer, q, nq, firstVisible, lastVisible, out var chosen);
            var expected = Reference(budget, keys[layer], hd, bt, box, q, nq, firstVisible, lastVisible, layer, layers);
            Assert.Equal(expected, chosen);
            int visible = (lastVisible + bt - 1) / bt;
            int forced = 1 + visible - Math.Max(0, firstVisible - 17) / bt;
            Assert.True(chosen.Length <= Math.Max(forced, budget.BlocksFor(visible, layer, layers)), $"{chosen.Length} blocks of {visible}");
        }
    }

    /// <summary>Scores as the selector should compute them, in double: per row and box 0.5 (q·(min + max) + spread
    /// |q|·(max - min)), a block's estimate its best box; bound rule: the largest estimate of any row (spread 100: the
    /// bound); mass rules: per row the softmax over all visible blocks of estimate + log(tokens), a block scoring its
    /// largest (mass) or mean (total) share; forced blocks, then the best scores, the lower index on a tie.</summary>
    private static int[] Reference(KvOffloadBudget budget, float[] keys, int hd, int bt, int box, float[] q, int nq, int firstVisible,
        int lastVisible, int layer, int layers)
    {
        int visible = (lastVisible + bt - 1) / bt;
        int sinkEnd = Math.Min(visible, (budget.SinkTokens + bt - 1) / bt);
        int recentStart = Math.Max(sinkEnd, Math.Max(0, firstVisible - budget.RecentTokens) / bt);
        var forced = Enumerable.Range(0, sinkEnd).Concat(Enumerable.Range(recentStart, visible - recentStart)).ToHashSet();
        int take = budget.BlocksFor(visible, layer, layers);
        int extra = Math.Max(0, take - forced.Count);
        double spread = budget.Spread / 100.0;
        var est = new double[visible, nq];
        for (int b = 0; b < visible; b++)
            for (int r = 0; r < nq; r++)
            {
                double best = double.NegativeInfinity;
                for (int t0 = b * bt; t0 < Math.Min(lastVisible, (b + 1) * bt); t0 += box)
                {
                    double s = 0;
                    for (int i = 0; i < hd; i++)
                    {
                        double mn = double.PositiveInfinity, mx = double.NegativeInfinity;
                        for (int t = t0; t < Math.Min(t0 + box, keys.Length / hd); t++)   // the box as summarised
                        {
                            mn = Math.Min(mn, keys[t * hd + i]);
                            mx = Math.Max(mx, keys[t * hd + i]);
                        }
                        double qi = q[r * hd + i];
                        s += 0.5 * (qi * (mn + mx) + spread * Math.Abs(qi) * (mx - mn));
                    }
                    best = Math.Max(best, s);
                }
                est[b, r] = best;
            }
        var score = new double[visible];
        if (budget.Rule == BlockRule.Bound)
            for (int b = 0; b < visible; b++)
                score[b] = Enumerable.Range(0, nq).Max(r => est[b, r]);
        else
            for (int r = 0; r < nq; r++)
            {
                double max = Enumerable.Range(0, visible).Max(b => est[b, r]);
                var w = Enumerable.Range(0, visible).Select(b => Math.Min(bt, lastVisible - b * bt) * Math.Exp(est[b, r] - max)).ToArray();
                double sum = w.Sum();
                for (int b = 0; b < visible; b++)
                    score[b] = budget.Rule == BlockRule.Mass ? Math.Max(score[b], w[b] / sum) : score[b] + w[b] / sum / nq;
            }
        var others = Enumerable.Range(0, visible).Where(b => !forced.Contains(b)).OrderByDescending(b => score[b]).ThenBy(b => b).Take(extra);
        return forced.Concat(others).Order().ToArray();
    }

    /// <summary>At spread 100 a row's estimate is the Quest bound (<see cref="BlockSummaries.UpperBound"/>); at 0 it is
    /// the score of the box centre; a partial block reads only its filled boxes.</summary>
    [Fact]
    public void EstimatesSpanFromTheCentreToTheBound()
    {
        int hd = 10, bt = 8;
        var rng = new Random(TestSeeds.Of(nameof(EstimatesSpanFromTheCentreToTheBound)));
        var sums = new BlockSummaries(1, 1, hd, bt, 4);
        var keys = Gaussian(rng, 21 * hd);
        for (int t = 0; t < 21; t++) sums.Add(0, 0, t, keys.AsSpan(t * hd, hd));
        var q = Gaussian(rng, 2 * hd);
        var rows = new float[2];
        for (int b = 0; b < 2; b++)
        {
            sums.RowEstimates(0, 0, b, bt, q, 2, 1f, rows);
            for (int r = 0; r < 2; r++)
            {
                float bound = sums.UpperBound(0, 0, b, q.AsSpan(r * hd, hd), 1);
                Assert.True(Math.Abs(rows[r] - bound) <= 1e-5f * (1 + Math.Abs(bound)), $"block {b} row {r}: {rows[r]} vs bound {bound}");
            }
        }
        // Block 2 holds tokens 16-20: boxes 16-19 and 20 alone; at spread 0, the better box centre.
        sums.RowEstimates(0, 0, 2, 5, q, 1, 0f, rows);
        double Centre(int t0, int t1)
        {
            double s = 0;
            for (int i = 0; i < hd; i++)
            {
                double mn = Enumerable.Range(t0, t1 - t0).Min(t => keys[t * hd + i]), mx = Enumerable.Range(t0, t1 - t0).Max(t => keys[t * hd + i]);
                s += q[i] * (mn + mx) / 2;
            }
            return s;
        }
        double want = Math.Max(Centre(16, 20), Centre(20, 21));
        Assert.True(Math.Abs(rows[0] - want) <= 1e-4 * (1 + Math.Abs(want)), $"{rows[0]} vs {want}");
    }

    /// <summary>Coverage: at 0 nothing beyond the forced blocks; at 100 the whole budget; in between no more blocks
    /// than at a higher target.</summary>
    [Fact]
    public void CoverageStopsEarlyAndNeverAddsBlocks()
    {
        int hd = 8, bt = 4, tokens = 203;
        var rng = new Random(TestSeeds.Of(nameof(CoverageStopsEarlyAndNeverAddsBlocks)));
        var sums = new BlockSummaries(1, 1, hd, bt, 2);
        for (int t = 0; t < tokens; t++) sums.Add(0, 0, t, Gaussian(rng, hd, 0.6f));
        var q = Gaussian(rng, 4 * hd);
        int Count(string text)
        {
            var s = new BlockSelector(KvOffloadBudget.Parse(text) with { SinkTokens = 4, RecentTokens = 8 }, sums);
            return Select(s, 0, q, 4, tokens, tokens, out _);
        }
        int forced = 1 + 3;   // block 0; blocks 48-50 (tokens 195-202)
        int full = Count("40%:rule=mass");
        Assert.Equal((int)Math.Ceiling(0.4 * 51), full);
        Assert.Equal(forced, Count("40%:rule=mass,cover=0"));
        Assert.Equal(full, Count("40%:rule=mass,cover=100"));
        int previous = forced;
        foreach (int c in new[] { 20, 50, 80, 95, 99 })
        {
            int n = Count($"40%:rule=mass,cover={c}");
            Assert.InRange(n, previous, full);
            previous = n;
        }
        Assert.True(previous > forced, "no coverage target added a block");
    }

    /// <summary>Dense first layers read every block; the others split the rest, and the sum over layers stays within
    /// layers x the budget.</summary>
    [Theory]
    [InlineData("25%:dense=1", 8)]
    [InlineData("25%:dense=2", 8)]
    [InlineData("12:dense=1", 6)]
    [InlineData("50%:dense=3", 4)]
    public void DenseLayersKeepTheTotalBudget(string text, int layers)
    {
        var budget = KvOffloadBudget.Parse(text);
        for (int visible = 1; visible < 300; visible += 7)
        {
            int total = 0;
            for (int l = 0; l < layers; l++)
            {
                int n = budget.BlocksFor(visible, l, layers);
                if (l < budget.DenseLayers) Assert.Equal(visible, n);
                Assert.InRange(n, 0, visible);
                total += n;
            }
            Assert.True(total <= layers * budget.BlocksFor(visible) || total <= budget.DenseLayers * visible,
                $"{visible} visible: {total} blocks over {layers} layers");
        }
    }

    [Theory]
    [InlineData("25%:rule=mass,spread=35", "offload@25%")]
    [InlineData("25%:rule=total,cover=90,dense=1", "offload@25%:rule=total,cover=90,dense=1")]
    [InlineData("25%:rule=bound,spread=100", "offload@25%:rule=bound,spread=100")]
    public void RuleArgumentsParse(string text, string name) => Assert.Equal(name, KvOffloadBudget.Parse(text).Name);

    [Theory]
    [InlineData("25%:rule=best")]
    [InlineData("25%:spread=101")]
    [InlineData("25%:cover=200")]
    [InlineData("25%:dense=-1")]
    public void BadRuleArgumentsAreSpecErrors(string text) =>
        Assert.Contains($"offload budget '{text}'", Assert.Throws<KvSpecException>(() => KvOffloadBudget.Parse(text)).Message);

    /// <summary>The device tier (Kvq.Cuda Offload/OffloadedKvSequence) scores the summaries on the device and hands the
    /// estimates to <see cref="BlockSelector.Plan"/> and <see cref="BlockSelector.Rank"/>: from the same estimates
    /// (RowEstimates, every visible block) they choose exactly what Select chooses, for every rule but Quest's bound
    /// (spread 100, which Select scores by UpperBound), on random keys and queries, prefill chunks and decode steps.</summary>
    [Theory]
    [InlineData("25%", 1, 700, 700)]
    [InlineData("25%:rule=total,spread=50", 4, 640, 655)]
    [InlineData("30%:rule=bound,spread=35", 4, 333, 333)]
    [InlineData("5:rule=mass,cover=60", 2, 500, 515)]
    [InlineData("40%:dense=1", 1, 900, 900)]
    [InlineData("full", 1, 300, 300)]
    public void RankFromEstimatesChoosesWhatSelectChooses(string budgetText, int nq, int firstVisible, int lastVisible)
    {
        const int hd = 16, bt = 32, layers = 3;
        var rng = new Random(TestSeeds.Of(budgetText, nq, firstVisible));
        var budget = KvOffloadBudget.Parse(budgetText);
        var sums = new BlockSummaries(layers, 1, hd, bt, budget.BoxTokens);
        for (int l = 0; l < layers; l++)
            for (int t = 0; t < lastVisible; t++) sums.Add(l, 0, t, Gaussian(rng, hd));
        var selector = new BlockSelector(budget, sums);
        for (int l = 0; l < layers; l++)
        {
            var q = Gaussian(rng, nq * hd, 0.5f);
            Select(selector, l, q, nq, firstVisible, lastVisible, out var want);
            var plan = BlockSelector.Plan(budget, l, layers, bt, firstVisible, lastVisible);
            var est = new float[plan.Visible * nq];
            for (int b = 0; b < plan.Visible; b++)
                sums.RowEstimates(l, 0, b, Math.Min(bt, lastVisible - b * bt), q, nq, budget.Spread / 100f, est.AsSpan(b * nq, nq));
            var got = new int[plan.Visible];
            int n = BlockSelector.Rank(budget, plan, est, nq, lastVisible, bt, got, new float[plan.Visible], new int[plan.Visible]);
            Assert.Equal(want, got[..n]);
            Assert.True(n < plan.Visible || budget.Full || plan.All, "a budget below every block read them all");
        }
    }
}
