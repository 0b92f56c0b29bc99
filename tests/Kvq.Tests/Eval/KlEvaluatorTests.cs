using Kvq.Cache;
using Kvq.Eval;

namespace Kvq.Tests.Eval;

/// <summary>KL divergence and top-1 agreement against the f32 cache on the same windows.</summary>
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
        var rows = eval.Evaluate(EvalFixtures.MobyDickHeadTokens, 256, 2, specs);
        Assert.Equal(3, rows.Count);
        var f32 = rows[0];
        Assert.Equal(0, f32.MeanKl);
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
    }
}
