using Kvq.Cache;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>The codecs driven by the paged cache on books-19m (head dim 64): residual windows and closeness to f32.</summary>
public class CodecsInPagedSequenceTests(ITestOutputHelper output)
{
    private static float[] Logits(string spec, int n)
    {
        var model = new Kvq.Model.Transformer(SharedModels.Books, new Parallelism(2), maxBatch: 64);
        var tokens = SharedModels.MobyDickTokens.AsSpan(2000, n).ToArray();
        var logits = new float[n * model.Config.VocabSize];
        using var seq = KvCacheFactory.CreateSequence(model.KvShape, spec);
        model.Forward(tokens, seq, default, logits);
        return logits;
    }

    /// <summary>
    /// KIVI keeps the last 128 tokens in f16 and quantizes a 32-token block only once it leaves that window, so up to
    /// 128 + 31 tokens nothing is quantized: logits equal the f16 cache's bit for bit. At 160 tokens block 0 is
    /// sealed, and every query of that forward batch (tokens 128..160 with batches of 64) sees it quantized.
    /// </summary>
    [Fact]
    public void KiviIsExactlyF16InsideItsResidualWindow()
    {
        Assert.Equal(Logits("f16", 159), Logits("kivi2", 159));
        var f16 = Logits("f16", 161);
        var kivi = Logits("kivi2", 161);
        int vocab = SharedModels.Books.Config.VocabSize;
        Assert.True(f16.AsSpan(0, 128 * vocab).SequenceEqual(kivi.AsSpan(0, 128 * vocab)));
        for (int t = 128; t < 161; t++)
            Assert.False(f16.AsSpan(t * vocab, vocab).SequenceEqual(kivi.AsSpan(t * vocab, vocab)), $"token {t}");
    }

    /// <summary>Per-token and per-channel int codecs without a residual quantize from the first block on.</summary>
    [Theory]
    [InlineData("q8_0", 0.05)]
    [InlineData("q4_0", 0.6)]
    [InlineData("int4-ch/int4", 0.3)]
    public void LogitsCloseToF32(string spec, double maxRms)
    {
        const int n = 100;
        var f32 = Logits("f32", n);
        var q = Logits(spec, n);
        double se = 0, ref2 = 0;
        for (int i = 0; i < f32.Length; i++) { se += (f32[i] - q[i]) * (f32[i] - q[i]); ref2 += f32[i] * f32[i]; }
        double rms = Math.Sqrt(se / f32.Length);
        output.WriteLine($"{spec}: logit rms difference vs f32 {rms:F5} (logit rms {Math.Sqrt(ref2 / f32.Length):F3}), 100 tokens");
        Assert.True(rms > 0, $"{spec}: no difference from f32, the codec did not run");
        Assert.True(rms < maxRms, $"{spec}: logit rms difference {rms:F4} (logit rms {Math.Sqrt(ref2 / f32.Length):F3})");
    }
}
