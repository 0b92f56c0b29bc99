using Kvq.Cache;
using Kvq.Cache.Offload;
using Kvq.Tensors;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache.Offload;

/// <summary>Offloaded attention: the per-block bound is an upper bound of every score in the block (on post-RoPE keys,
/// where a pre-RoPE box is not); the selector keeps sinks and the recent window and picks the highest bounds; attention
/// is exact over what it picks; 'full' equals attention without offload bit for bit.</summary>
public class BlockSelectionTests
{
    private static KvShape BooksShape => EngineFixtures.Model(EngineFixtures.Books, 16).KvShape;

    private static float[] Gaussian(Random rng, int n, float scale = 1f)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = scale * (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return a;
    }

    private static double Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * b[i];
        return s;
    }

    /// <summary>Random keys at random positions (odd block size, channels of different scales), rotated by the model's
    /// RoPE: for random queries, every block's bound is at least the largest q·k of its keys. The same box built on the
    /// pre-RoPE keys is not a bound for the rotated scores (which is why the summaries hold post-RoPE keys).</summary>
    [Fact]
    public void BoundIsAnUpperBoundOfEveryScoreInTheBlock()
    {
        var shape = BooksShape;
        int hd = shape.HeadDim, bt = 7, blocks = 40;
        var rng = new Random(TestSeeds.Of(nameof(BoundIsAnUpperBoundOfEveryScoreInTheBlock)));
        var post = new BlockSummaries(1, 1, hd, bt);
        var pre = new BlockSummaries(1, 1, hd, bt);
        var rotated = new float[blocks * bt * hd];
        Span<float> cos = stackalloc float[shape.Rope.RopeDims / 2], sin = stackalloc float[shape.Rope.RopeDims / 2];
        int pos0 = rng.Next(0, 3000);
        // Keys as a model makes them: a per-channel offset plus much smaller noise (tight boxes, as in a real model).
        var mean = Gaussian(rng, hd, 2f);
        for (int t = 0; t < blocks * bt; t++)
        {
            var k = Gaussian(rng, hd, 0.05f);
            for (int i = 0; i < hd; i++) k[i] = mean[i] + k[i] * (1 + (i % 5));
            pre.Add(0, 0, t, k);
            shape.Rope.Angles(pos0 + t, cos, sin);
            shape.Rope.Rotate(k, cos, sin);
            post.Add(0, 0, t, k);
            k.CopyTo(rotated, t * hd);
        }
        Assert.Equal(blocks, post.Blocks(0));
        int preViolations = 0;
        for (int trial = 0; trial < 200; trial++)
        {
            int nq = 1 + trial % 3;
            var q = Gaussian(rng, nq * hd, 0.5f);
            for (int b = 0; b < blocks; b++)
            {
                double best = double.NegativeInfinity;
                for (int r = 0; r < nq; r++)
                    for (int t = b * bt; t < (b + 1) * bt; t++)
                        best = Math.Max(best, Dot(q.AsSpan(r * hd, hd), rotated.AsSpan(t * hd, hd)));
                float bound = post.UpperBound(0, 0, b, q, nq);
                Assert.True(bound >= best - 1e-4 * (1 + Math.Abs(best)), $"trial {trial}, block {b}: bound {bound} < max score {best}");
                if (pre.UpperBound(0, 0, b, q, nq) < best - 1e-3) preViolations++;
            }
        }
        Assert.True(preViolations > 0, "a box of pre-RoPE keys happened to bound every rotated score");
    }

    /// <summary>The choice under Quest's bound (rule=bound,spread=100) against a brute-force reference: sink blocks, the
    /// recent window's blocks, then the highest bounds, ascending, budget respected (never below the forced blocks).
    /// The other rules: <see cref="BlockRuleTests"/>.</summary>
    [Theory]
    [InlineData("25%", 0, 1)]
    [InlineData("25%", 40, 1)]
    [InlineData("0.1", 5, 16)]
    [InlineData("6", 17, 3)]
    [InlineData("1", 0, 1)]
    [InlineData("full", 3, 1)]
    public void SelectorKeepsForcedBlocksThenTheHighestBounds(string budgetText, int firstOffset, int nq)
    {
        int hd = 16, bt = 8, tokens = 413;
        var budget = KvOffloadBudget.Parse(budgetText) with { SinkTokens = 4, RecentTokens = 20, Rule = BlockRule.Bound, Spread = 100 };
        var rng = new Random(TestSeeds.Of(nameof(SelectorKeepsForcedBlocksThenTheHighestBounds), budgetText, firstOffset));
        var sums = new BlockSummaries(2, 2, hd, bt);
        for (int t = 0; t < tokens; t++)
            for (int l = 0; l < 2; l++)
                for (int h = 0; h < 2; h++)
                    sums.Add(l, h, t, Gaussian(rng, hd));
        var selector = new BlockSelector(budget, sums);
        var q = Gaussian(rng, nq * hd);
        int lastVisible = tokens, firstVisible = tokens - firstOffset;
        int visible = (tokens + bt - 1) / bt;
        var chosen = new int[visible];
        int n = selector.Select(1, 1, q, nq, firstVisible, lastVisible, chosen, new float[visible], new int[visible]);

        var forced = new SortedSet<int> { 0 };
        for (int b = Math.Max(0, firstVisible - 20) / bt; b < visible; b++) forced.Add(b);
        int want = budget.Full ? visible : Math.Max(forced.Count, budget.BlocksFor(visible));
        var others = Enumerable.Range(0, visible).Where(b => !forced.Contains(b))
            .OrderByDescending(b => sums.UpperBound(1, 1, b, q, nq)).Take(want - forced.Count);
        var expected = forced.Concat(others).Order().ToArray();
        Assert.Equal(expected, chosen[..n]);
    }

    /// <summary>An f32 cache of random keys and values, offloaded at 25% with 5-token blocks (Quest's bound, and the
    /// default mass rule): one decode query's output equals f64 attention over exactly the tokens of the blocks the selector
    /// reports, and differs from attention over all of them.</summary>
    [Theory]
    [InlineData("25%:rule=bound,spread=100")]
    [InlineData("25%")]
    public void AttentionIsExactOverTheChosenBlocks(string budgetText)
    {
        var shape = BooksShape;
        int bt = 5, n = 203, hd = shape.HeadDim;
        var rng = new Random(TestSeeds.Of(nameof(AttentionIsExactOverTheChosenBlocks)));
        var config = new KvCacheConfig("f32", "f32", bt, Offload: KvOffloadBudget.Parse(budgetText));
        using var seq = new PagedKvCache(shape, config).CreateSequence();
        var k = Gaussian(rng, n * shape.KvDim);
        var v = Gaussian(rng, n * shape.KvDim);
        seq.BeginChunk(new int[n - 1]);
        for (int l = 0; l < shape.Layers; l++) seq.Append(l, k.AsSpan(0, (n - 1) * shape.KvDim), v.AsSpan(0, (n - 1) * shape.KvDim), n - 1);
        seq.Commit(n - 1);
        seq.BeginChunk([0]);
        seq.Append(0, k.AsSpan((n - 1) * shape.KvDim), v.AsSpan((n - 1) * shape.KvDim), 1);
        var q = Gaussian(rng, shape.QDim, 2f);
        var output = new float[shape.QDim];
        seq.Attend(0, q, 1, output, new Parallelism(2));

        // Keys as attention sees them: rotated at their positions (f32 stores them rotated).
        var rotated = (float[])k.Clone();
        for (int t = 0; t < n; t++)
            for (int h = 0; h < shape.KvHeads; h++) shape.Rope.RotateAt(rotated.AsSpan(t * shape.KvDim + h * hd, hd), 1, [t]);
        bool anySkipped = false;
        for (int h = 0; h < shape.KvHeads; h++)
        {
            var qs = new float[shape.GroupSize * hd];
            for (int j = 0; j < shape.GroupSize; j++)
                for (int i = 0; i < hd; i++) qs[j * hd + i] = q[(h * shape.GroupSize + j) * hd + i] * shape.ScoreScale;
            int visible = (n + bt - 1) / bt;
            var chosen = new int[visible];
            int c = seq.Offload!.Select(0, h, qs, shape.GroupSize, n, n, chosen, new float[visible], new int[visible]);
            anySkipped |= c < visible;
            Assert.True(c <= Math.Max(3, (int)Math.Ceiling(0.25 * visible)) + 1, $"head {h}: {c} of {visible} blocks");
            var toks = chosen[..c].SelectMany(b => Enumerable.Range(b * bt, Math.Min(bt, n - b * bt))).ToArray();
            for (int j = 0; j < shape.GroupSize; j++)
            {
                int hq = h * shape.GroupSize + j;
                var w = toks.Select(t => Dot(q.AsSpan(hq * hd, hd), rotated.AsSpan(t * shape.KvDim + h * hd, hd)) * shape.ScoreScale).ToArray();
                double max = w.Max(), sum = w.Sum(x => Math.Exp(x - max));
                var expected = new double[hd];
                for (int i = 0; i < toks.Length; i++)
                    for (int d = 0; d < hd; d++) expected[d] += Math.Exp(w[i] - max) / sum * v[toks[i] * shape.KvDim + h * hd + d];
                ReferenceAttention.AssertClose(output.AsSpan(hq * hd, hd).ToArray(), expected);
            }
        }
        Assert.True(anySkipped, "the budget skipped no block");
    }

    /// <summary>books-19m over 300 tokens of Moby Dick (prefill in chunks of 64, then 12 greedy decode steps), at 2 and
    /// 5 threads (split-K): offload@full gives the same logits as no offload, bit for bit, in f16, in KVQuant with a sink,
    /// and in a staging format.</summary>
    [Theory]
    [InlineData("f16", 0, 2)]
    [InlineData("f16", 0, 5)]
    [InlineData("nuq3-1%", 1, 2)]
    [InlineData("kivi2", 0, 2)]
    public void FullModeEqualsAttentionWithoutOffload(string spec, int sink, int threads)
    {
        var m = EngineFixtures.Books;
        var model = new Kvq.Model.Transformer(m.Weights, new Parallelism(threads), 64);
        var profile = spec.StartsWith("nuq") ? Codecs.KvQuant.KvQuantTestData.Profile(model.KvShape, tokens: 600) : null;
        var plain = KvCacheConfig.Parse(spec) with { SinkTokens = sink, Profile = profile };
        var prompt = EngineFixtures.MobyPrompt(7000, 299);
        int vocab = model.Config.VocabSize;
        float[] Run(KvCacheConfig c)
        {
            using var seq = new PagedKvCache(model.KvShape, c).CreateSequence();
            var all = new float[(prompt.Length + 12) * vocab];
            var last = new float[vocab];
            model.Forward(prompt, seq, last, all.AsSpan(0, prompt.Length * vocab));
            for (int step = 0; step < 12; step++)
            {
                int next = Array.IndexOf(last, last.Max());
                model.Forward([next], seq, last);
                last.CopyTo(all, (prompt.Length + step) * vocab);
            }
            return all;
        }
        var expected = Run(plain);
        var full = Run(plain with { Offload = KvOffloadBudget.Parse("full") });
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(full[i]),
                $"{spec}: logit {i % vocab} of token {i / vocab}: {expected[i]:R} vs offload@full {full[i]:R}");
        // A budget reads fewer blocks: different, but close on this short context.
        var quarter = Run(plain with { Offload = KvOffloadBudget.Parse("25%") });
        Assert.NotEqual(expected, quarter);
    }

    [Theory]
    [InlineData("full", "offload@full")]
    [InlineData("25%", "offload@25%")]
    [InlineData("0.1", "offload@10%")]
    [InlineData("16", "offload@16blk")]
    [InlineData("25%:recent=96,box=4", "offload@25%:recent=96,box=4")]
    [InlineData("10%:sink=0", "offload@10%:sink=0")]
    public void BudgetsParse(string text, string name) => Assert.Equal(name, KvOffloadBudget.Parse(text).Name);

    [Theory]
    [InlineData("0")]
    [InlineData("-3")]
    [InlineData("150%")]
    [InlineData("2.5")]
    [InlineData("lots")]
    [InlineData("25%:recent")]
    [InlineData("25%:window=3")]
    [InlineData("25%:box=-1")]
    public void BadBudgetsAreSpecErrors(string text) =>
        Assert.Contains($"offload budget '{text}'", Assert.Throws<KvSpecException>(() => KvOffloadBudget.Parse(text)).Message);

    [Fact]
    public void OffloadWithATokenPolicyIsRefused()
    {
        var config = KvCacheConfig.Parse("f16") with
        {
            Offload = KvOffloadBudget.Parse("25%"),
            Policy = new Kvq.Cache.Policies.KvPolicyConfig(Kvq.Cache.Policies.KvPolicyRegistry.Parse("h2o"), Kvq.Cache.Policies.KvBudget.Parse("0.25")),
        };
        Assert.Contains("use one", Assert.Throws<KvSpecException>(() => new PagedKvCache(BooksShape, config)).Message);
    }
}
