using Kvq.Cache;
using Kvq.Eval;

namespace Kvq.Tests.Eval;

/// <summary>KL divergence (mean, tail percentiles) and top-1 agreement against a reference cache on the same windows.</summary>
public class KlEvaluatorTests
{
    [Fact]
    public void KlOfKnownDistributions()
    {
        float[] p = [0f, MathF.Log(2), MathF.Log(3)]; // softmax = 1/6, 2/6, 3/6
        float[] q = [5f, 5f, 5f];                     // uniform (a shift of the logits changes nothing)
        double expected = 1 / 6.0 * Math.Log(0.5) + 2 / 6.0 * Math.Log(1.0) + 3 / 6.0 * Math.Log(1.5);
        Assert.Equal(expected, NextTokenDivergence.KlDivergence(p, q), 1e-6);
        Assert.Equal(0, NextTokenDivergence.KlDivergence(p, p));
        Assert.True(NextTokenDivergence.KlDivergence(q, p) > 0);
        Assert.Equal(2, NextTokenDivergence.Argmax(p));
        Assert.Equal(0, NextTokenDivergence.Argmax(q)); // first on ties
    }

    /// <summary>books-19m, 2 windows of 256 tokens of Moby Dick: f32 against itself is exactly 0 and agrees
    /// everywhere; lossy caches diverge, more with fewer bits.</summary>
    [Fact]
    public void F32AgainstItselfIsZeroAndLossySpecsAreNot()
    {
        var eval = new KlEvaluator(EvalFixtures.BooksTransformer(), EvalFixtures.Books.Tokenizer.BosId);
        var specs = new[] { "f32", "q8_0", "int2" }.Select(s => KvCacheConfig.Parse(s)).ToList();
        var rows = eval.Evaluate(EvalFixtures.MobyDickHeadTokens, 256, 2, specs, KvCacheConfig.Parse("f32"));
        Assert.Equal(3, rows.Count);
        var f32 = rows[0];
        Assert.Equal(0, f32.MeanKl);
        Assert.Equal(0, f32.MaxKl);
        Assert.Equal(1, f32.Top1Agreement);
        Assert.Equal(f32.ReferencePpl, f32.Ppl);
        Assert.Equal(2 * 255, f32.Tokens);
        var q8 = rows[1];
        var int2 = rows[2];
        Assert.True(q8.MeanKl > 0 && q8.MeanKl < 0.01, $"q8_0 KL {q8.MeanKl}");
        Assert.True(int2.MeanKl > 10 * q8.MeanKl, $"int2 KL {int2.MeanKl} vs q8_0 {q8.MeanKl}");
        Assert.True(int2.Top1Agreement < q8.Top1Agreement && q8.Top1Agreement <= 1);
        Assert.True(int2.Ppl > int2.ReferencePpl);
        Assert.Equal(8.5, q8.BitsPerElement);
        foreach (var row in rows.Skip(1))
        {
            // A heavy tail: a few positions carry far more than the mean.
            Assert.True(row.P99Kl > row.MeanKl && row.P999Kl > row.P99Kl && row.MaxKl >= row.P999Kl, $"{row.Kv}: mean {row.MeanKl} 99% {row.P99Kl} 99.9% {row.P999Kl} max {row.MaxKl}");
        }
    }

    /// <summary>Without a reference the candidate runs against the f16 cache: f16 itself scores 0, f32 does not.</summary>
    [Fact]
    public void DefaultReferenceIsF16()
    {
        var eval = new KlEvaluator(EvalFixtures.BooksTransformer(), EvalFixtures.Books.Tokenizer.BosId);
        var rows = eval.Evaluate(EvalFixtures.MobyDickHeadTokens, 128, 1, [KvCacheConfig.Parse("f16"), KvCacheConfig.Parse("f32")]);
        Assert.All(rows, r => Assert.Equal("f16", r.Reference));
        Assert.Equal(0, rows[0].MeanKl);
        Assert.Equal(0, rows[0].P999Kl);
        Assert.True(rows[1].MeanKl > 0);
    }

    [Fact]
    public void PercentileInterpolatesBetweenClosestRanks()
    {
        double[] v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        Assert.Equal(1, KlEvaluator.Percentile(v, 0));
        Assert.Equal(11, KlEvaluator.Percentile(v, 1));
        Assert.Equal(6, KlEvaluator.Percentile(v, 0.5));
        Assert.Equal(10.9, KlEvaluator.Percentile(v, 0.99), 12);
        Assert.Equal(10.99, KlEvaluator.Percentile(v, 0.999), 12);
        Assert.Equal(7, KlEvaluator.Percentile([7.0], 0.999));
    }
}
