using Kvq.Cache;
using Kvq.Eval;
using Xunit.Abstractions;

namespace Kvq.Tests.Eval;

/// <summary>Copy recall: sequence layout, placements, and the MANIFEST's finding on books-19m (second copy ~2, first ~40).</summary>
public class CopyRecallTests(ITestOutputHelper output)
{
    [Fact]
    public void SequenceIsBosPassageFillerPassage()
    {
        var book = Enumerable.Range(1000, 5000).ToArray();
        var samples = CopyRecallSample.Place(book.Length, 20, 300, 8, seed: 7);
        Assert.Equal(samples, CopyRecallSample.Place(book.Length, 20, 300, 8, seed: 7)); // deterministic
        Assert.NotEqual(samples, CopyRecallSample.Place(book.Length, 20, 300, 8, seed: 8));
        foreach (var s in samples)
        {
            // Passage and the longest filler are disjoint and at least MinGap apart.
            bool apart = s.FillerStart >= s.PassageStart + 20 + CopyRecallSample.MinGap || s.PassageStart >= s.FillerStart + 300 + CopyRecallSample.MinGap;
            Assert.True(apart, $"{s}");
            var seq = s.Sequence(book, 20, 100, bos: 1);
            Assert.Equal(1 + 20 + 100 + 20, seq.Length);
            Assert.Equal(1, seq[0]);
            var (a0, a1) = CopyRecallSample.FirstCopy(20);
            var (b0, b1) = CopyRecallSample.SecondCopy(20, 100);
            Assert.Equal(book.AsSpan(s.PassageStart, 20).ToArray(), seq[a0..a1]);
            Assert.Equal(book.AsSpan(s.PassageStart, 20).ToArray(), seq[b0..b1]);
            Assert.Equal(book.AsSpan(s.FillerStart, 100).ToArray(), seq[a1..b0]);
        }
        Assert.Throws<ArgumentException>(() => CopyRecallSample.Place(1200, 200, 500, 1, 1));
    }

    /// <summary>books-19m, f16 cache, 2 passages of 200 tokens with 500 tokens of other text between the copies.</summary>
    [Fact]
    public void SecondCopyIsFarEasierThanTheFirstOnBooks19m()
    {
        var eval = new CopyRecallEvaluator(EvalFixtures.BooksTransformer(), EvalFixtures.Books.Tokenizer.BosId);
        var rows = eval.Evaluate(EvalFixtures.MobyDickHeadTokens, KvCacheConfig.Parse("f16"), 200, [500], samples: 2, seed: 1);
        var r = Assert.Single(rows);
        output.WriteLine($"first copy ppl {r.FirstCopyPpl:F2}, second copy ppl {r.SecondCopyPpl:F3} ({r.Samples} samples, filler {r.FillerTokens})");
        Assert.Equal(2, r.Samples);
        Assert.Equal(400, r.Tokens);
        Assert.InRange(r.FirstCopyPpl, 15, 150);
        Assert.InRange(r.SecondCopyPpl, 1, 5);
        Assert.Equal(16, r.BitsPerElement, 0.6); // 901 tokens in 32-token blocks
    }

    [Fact]
    public void ContextLongerThanTheModelIsRejected()
    {
        var eval = new CopyRecallEvaluator(EvalFixtures.StoriesTransformer(), EvalFixtures.Stories.Tokenizer.BosId);
        var e = Assert.Throws<ArgumentException>(() =>
            eval.Evaluate(EvalFixtures.StoriesTokens, KvCacheConfig.Parse("f32"), 200, [5000], 1, 1));
        Assert.Contains("longer than the model's context", e.Message);
    }
}
