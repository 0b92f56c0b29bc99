using System.Diagnostics;
using Kvq.Cache;
using Kvq.Calibration.Fisher;
using Kvq.Eval;
using Kvq.Model;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Calibration.Fisher;

/// <summary>The calibration forward pass against <see cref="Transformer"/>, and the cost of a books-19m window.</summary>
public class CalibrationForwardTests(ITestOutputHelper output)
{
    private static readonly Parallelism Two = new(2);

    /// <summary>Loss of the window from Transformer.Forward's logits (dense f32 cache), as perplexity evaluation computes it.</summary>
    private static double TransformerLoss(ModelWeights weights, int[] tokens)
    {
        var model = new Transformer(weights, Two);
        var logits = new float[tokens.Length * weights.Config.VocabSize];
        model.Forward(tokens, new DenseF32Sequence(model.KvShape), default, logits);
        return PerplexityWindows.NegativeLogLikelihood(logits, tokens, weights.Config.VocabSize) / (tokens.Length - 1);
    }

    [Theory]
    [InlineData(24)]
    [InlineData(150)]   // several of Transformer's 64-token chunks
    public void Stories_loss_equals_the_loss_of_Transformer_logits(int n)
    {
        var tokens = CalibrationModels.StoriesWindow(n);
        var tape = new CalibrationForward(CalibrationModels.Stories, Two).Run(tokens);
        double expected = TransformerLoss(CalibrationModels.Stories, tokens);
        output.WriteLine($"stories260K {n} tokens: calibration {tape.Loss:F9} transformer {expected:F9}");
        Assert.Equal(expected, tape.Loss, 1e-6);
    }

    [Fact]
    public void Books_loss_equals_the_loss_of_Transformer_logits()
    {
        var tokens = PerplexityWindows.Window(SharedModels.MobyDickTokens, 512, 3, bos: 1);
        var tape = new CalibrationForward(SharedModels.Books, Two).Run(tokens);
        double expected = TransformerLoss(SharedModels.Books, tokens);
        output.WriteLine($"books-19m 512 tokens: calibration {tape.Loss:F9} transformer {expected:F9} (perplexity {Math.Exp(expected):F2})");
        Assert.Equal(expected, tape.Loss, 1e-6);
    }

    [Fact]
    public void Keys_and_values_are_the_pre_rope_projections()
    {
        // What the cache is handed: compare with K/V captured through the injection hook and with Wk/Wv applied by hand.
        var w = CalibrationModels.Stories;
        var tokens = CalibrationModels.StoriesWindow(10);
        var forward = new CalibrationForward(w, Two);
        var seen = new float[w.Config.Layers][];
        forward.Injection = (l, k, v) => seen[l] = k.ToArray();
        var g = new CalibrationBackward(w, Two).Run(forward.Run(tokens));
        int kvDim = w.Config.KvDim, dim = w.Config.Dim;
        for (int l = 0; l < w.Config.Layers; l++) Assert.Equal(seen[l], g.Layers[l].Keys);
        // Layer 0 by hand: RmsNorm(embedding) then Wk, no RoPE.
        var x = new float[dim];
        var xn = new float[dim];
        var k = new float[kvDim];
        w.TokenEmbedding.DequantizeRow(tokens[5], x);
        Kernels.RmsNorm(x, w.Layers[0].AttnNorm, w.Config.NormEps, xn);
        w.Layers[0].Wk.MatVec(xn, k, Parallelism.Single);
        var keys = g.Layers[0].Keys.AsSpan(5 * kvDim, kvDim);
        for (int i = 0; i < kvDim; i++) Assert.Equal(k[i], keys[i], 1e-5f * (1 + Math.Abs(k[i])));   // MatVec and MatMul may sum in different orders
    }

    [Fact]
    public void Rejects_a_window_of_one_token_and_ids_outside_the_vocabulary()
    {
        var forward = new CalibrationForward(CalibrationModels.Stories, Two);
        Assert.Throws<ArgumentException>(() => forward.Run([1]));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => forward.Run([1, 512]));
        Assert.Contains("512 at 1", e.Message);
    }

    [Fact]
    public void Books_window_forward_and_backward_time()
    {
        // Prints the cost of one books-19m window (not an assert: the machine is shared). KVQ_FISHER_TOKENS=2048 to
        // time a full-length window.
        int n = int.TryParse(Environment.GetEnvironmentVariable("KVQ_FISHER_TOKENS"), out int env) ? env : 512;
        var tokens = PerplexityWindows.Window(SharedModels.MobyDickTokens, n, 0, bos: 1);
        var weights = SharedModels.Books;
        var par = Parallelism.Default;
        new CalibrationBackward(weights, par).Run(new CalibrationForward(weights, par).Run(tokens.AsSpan(0, 16).ToArray()));   // JIT warm-up
        var process = Process.GetCurrentProcess();
        var cpu0 = process.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        var tape = new CalibrationForward(weights, par).Run(tokens);
        double fwd = sw.Elapsed.TotalSeconds;
        var g = new CalibrationBackward(weights, par).Run(tape);
        double total = sw.Elapsed.TotalSeconds;
        process.Refresh();
        double cpu = (process.TotalProcessorTime - cpu0).TotalSeconds;   // other tests may run beside this one
        output.WriteLine($"books-19m, {n}-token window, {par.Threads} threads ({Environment.ProcessorCount} cores): " +
            $"forward {fwd:F2} s, backward {total - fwd:F2} s, total {total:F2} s wall, process CPU {cpu:F2} s; " +
            $"loss {g.Loss:F4} (perplexity {Math.Exp(g.Loss):F1})");
        Assert.Equal(weights.Config.Layers, g.Layers.Length);
        Assert.All(g.Layers, l => Assert.All(l.KeyGradients, x => Assert.True(float.IsFinite(x))));
    }
}
