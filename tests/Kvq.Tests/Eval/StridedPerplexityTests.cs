using Kvq.Cache;
using Kvq.Eval;
using Kvq.Model;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Eval;

/// <summary>Sliding-window perplexity: window placement, which positions are scored, and agreement with the plain windows.</summary>
public class StridedPerplexityTests(ITestOutputHelper output)
{
    /// <summary>
    /// Sliding-window perplexity of books-19m over Moby Dick against llama.cpp's logits on windows built here, with
    /// the scoring restated in double precision: window w is BOS + text[w*S, w*S + ctx-1), and only its last S
    /// targets count, each -log softmax(row t-1)[window[t]]. The same 0.2% bar as the plain windows' test.
    /// </summary>
    [Fact]
    public void StridedPerplexityMatchesLlamaCppScoredByAPlainReference()
    {
        const int ctx = 200, stride = 48, windows = 5;
        var text = SharedModels.MobyDickTokens.AsSpan(3000, 2000).ToArray();
        int vocab = SharedModels.Books.Config.VocabSize;
        double nll = 0;
        int count = 0;
        using (var session = SharedModels.BooksLlamaCpp.CreateSession(ctx, threads: 2, cacheType: "f16"))
        {
            for (int w = 0; w < windows; w++)
            {
                int[] win = [1, .. text.AsSpan(w * stride, ctx - 1)];
                session.Reset();
                var logits = session.Eval(win, allLogits: true);
                for (int t = ctx - stride; t < ctx; t++)
                {
                    double max = double.NegativeInfinity, sum = 0;
                    for (int i = 0; i < vocab; i++) max = Math.Max(max, logits[(t - 1) * vocab + i]);
                    for (int i = 0; i < vocab; i++) sum += Math.Exp(logits[(t - 1) * vocab + i] - max);
                    nll += max + Math.Log(sum) - logits[(t - 1) * vocab + win[t]];
                    count++;
                }
            }
        }
        double peer = Math.Exp(nll / count);
        var ours = new PerplexityEvaluator(new Transformer(SharedModels.Books, new Parallelism(2)), bos: 1)
            .Evaluate(text, ctx, windows, KvCacheConfig.Parse("f32"), stride);
        output.WriteLine($"books-19m, Moby Dick, {windows} windows of {ctx}, stride {stride}: llama.cpp f16 {peer:F4}  kvq f32 {ours.Ppl:F4}  diff {(ours.Ppl / peer - 1) * 100:F3}%");
        Assert.Equal(windows * stride, ours.Tokens);
        Assert.Equal(windows * stride, count);
        Assert.InRange(ours.Ppl / peer, 0.998, 1.002);
        // Non-overlapping windows over the same text, every position scored, give a clearly different number.
        var everyPosition = new PerplexityEvaluator(new Transformer(SharedModels.Books, new Parallelism(2)), bos: 1)
            .Evaluate(text, ctx, windows, KvCacheConfig.Parse("f32"), stride: 0);
        Assert.True(Math.Abs(everyPosition.Ppl / peer - 1) > 0.02, $"plain windows {everyPosition.Ppl:F4} vs strided {peer:F4}");
    }

    [Fact]
    public void StridedWindowsAdvanceByStrideAndScoreEachTokenOnce()
    {
        var text = Enumerable.Range(100, 1000).ToArray();
        const int ctx = 65, stride = 16;
        int n = PerplexityWindows.StridedCount(text.Length, ctx, stride);
        Assert.Equal((1000 - 64) / 16 + 1, n);
        var scored = new List<int>();
        for (int w = 0; w < n; w++)
        {
            var win = PerplexityWindows.StridedWindow(text, ctx, stride, w, bos: 1);
            Assert.Equal(1, win[0]);
            Assert.Equal(text[w * stride], win[1]);
            Assert.Equal(text[w * stride + ctx - 2], win[^1]);
            for (int t = ctx - stride; t < ctx; t++) scored.Add(win[t]);
        }
        // Scored tokens are consecutive text tokens from ctx-1-stride on, none twice, none skipped.
        Assert.Equal(Enumerable.Range(100 + ctx - 1 - stride, n * stride), scored);
        Assert.Equal(0, PerplexityWindows.StridedCount(ctx - 2, ctx, stride));
        Assert.Throws<ArgumentException>(() => PerplexityWindows.StridedCount(1000, ctx, ctx));
        Assert.Throws<ArgumentException>(() => PerplexityWindows.StridedCount(1000, ctx, 0));
    }

    [Fact]
    public void NegativeLogLikelihoodOverARangeSumsToTheWhole()
    {
        var rng = new Random(3);
        const int vocab = 37, len = 9;
        var logits = Enumerable.Range(0, len * vocab).Select(_ => (float)rng.NextDouble() * 4 - 2).ToArray();
        var window = Enumerable.Range(0, len).Select(_ => rng.Next(vocab)).ToArray();
        double whole = PerplexityWindows.NegativeLogLikelihood(logits, window, vocab);
        double parts = PerplexityWindows.NegativeLogLikelihood(logits, window, vocab, 1, 4)
                       + PerplexityWindows.NegativeLogLikelihood(logits, window, vocab, 4, len);
        Assert.Equal(whole, parts, 1e-9);
        // Target 3 is scored from row 2: -log softmax(row 2)[window[3]].
        var row = logits.AsSpan(2 * vocab, vocab).ToArray();
        double lse = Math.Log(row.Sum(x => Math.Exp(x)));
        Assert.Equal(lse - row[window[3]], PerplexityWindows.NegativeLogLikelihood(logits, window, vocab, 3, 4), 1e-9);
    }

    /// <summary>Stride ctx-1 is the plain windows with every position scored: same perplexity to the last bit.</summary>
    [Fact]
    public void StrideOfCtxMinusOneEqualsNonOverlappingWindows()
    {
        var model = EvalFixtures.StoriesTransformer();
        var eval = new PerplexityEvaluator(model, EvalFixtures.Stories.Tokenizer.BosId);
        var tokens = EvalFixtures.StoriesTokens;
        var plain = eval.Evaluate(tokens, 128, 3, KvCacheConfig.Parse("f32"), stride: 0);
        var strided = eval.Evaluate(tokens, 128, 3, KvCacheConfig.Parse("f32"), stride: 127);
        Assert.Equal(plain.Ppl, strided.Ppl);
        Assert.Equal(plain.Tokens, strided.Tokens);
        Assert.Equal(127, strided.Stride);
        var sliding = eval.Evaluate(tokens, 128, 6, KvCacheConfig.Parse("f32"), stride: 32);
        Assert.Equal(6 * 32, sliding.Tokens);
        Assert.Equal(6, sliding.Windows);
        Assert.InRange(sliding.Ppl, 1.0, 100.0);
    }

    [Fact]
    public void CancelledBeforeAnyWindowThrows()
    {
        var eval = new PerplexityEvaluator(EvalFixtures.StoriesTransformer(), EvalFixtures.Stories.Tokenizer.BosId);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() =>
            eval.Evaluate(EvalFixtures.StoriesTokens, 64, 2, KvCacheConfig.Parse("f32"), 0, cancel: cts.Token));
    }

    [Fact]
    public void CancelAfterOneWindowKeepsThatWindow()
    {
        var eval = new PerplexityEvaluator(EvalFixtures.StoriesTransformer(), EvalFixtures.Stories.Tokenizer.BosId);
        using var cts = new CancellationTokenSource();
        var res = eval.Evaluate(EvalFixtures.StoriesTokens, 64, 5, KvCacheConfig.Parse("f32"), 0, (done, _) => { if (done == 1) cts.Cancel(); }, cts.Token);
        Assert.Equal(1, res.Windows);
        Assert.Equal(63, res.Tokens);
    }
}
