using Kvq.Eval;
using Kvq.Model;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Eval;

/// <summary>Perplexity over Moby Dick windows against llama.cpp evaluated on the same windows in the same run.</summary>
public class PerplexityVsLlamaCppTests(ITestOutputHelper output)
{
    private const int Ctx = 512;
    private const int Windows = 6;

    private static double LlamaCppPerplexity(string cacheType)
    {
        var tokens = SharedModels.MobyDickTokens;
        int vocab = SharedModels.Books.Config.VocabSize;
        using var session = SharedModels.BooksLlamaCpp.CreateSession(Ctx, threads: 2, cacheType: cacheType);
        double nll = 0;
        long n = 0;
        for (int w = 0; w < Windows; w++)
        {
            session.Reset();
            var win = PerplexityWindows.Window(tokens, Ctx, w, bos: 1);
            var logits = session.Eval(win, allLogits: true);
            nll += PerplexityWindows.NegativeLogLikelihood(logits, win, vocab);
            n += Ctx - 1;
        }
        return Math.Exp(nll / n);
    }

    private double Kvq(string spec) =>
        new PerplexityEvaluator(new Transformer(SharedModels.Books, new Parallelism(2)), bos: 1)
            .Evaluate(SharedModels.MobyDickTokens, Ctx, Windows, spec).Ppl;

    [Fact]
    public void F32CacheMatchesLlamaCppF16Within02Percent()
    {
        double peer = LlamaCppPerplexity("f16");
        double ours = Kvq("f32");
        output.WriteLine($"llama.cpp f16 {peer:F4}  kvq f32 {ours:F4}  diff {(ours / peer - 1) * 100:F3}%");
        Assert.InRange(ours / peer, 0.998, 1.002);
    }

    [Fact]
    public void F16CacheWithin01PercentOfF32()
    {
        double f32 = Kvq("f32"), f16 = Kvq("f16");
        output.WriteLine($"kvq f32 {f32:F4}  f16 {f16:F4}  diff {(f16 / f32 - 1) * 100:F4}%");
        Assert.InRange(f16 / f32, 0.999, 1.001);
        Assert.NotEqual(f32, f16); // the codec really ran
    }
}
