using Kvq.Cache;
using Kvq.Calibration.KvQuant;
using Kvq.Eval;
using Kvq.Model;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Calibration.KvQuant;

/// <summary>
/// books-19m end to end: calibrate on tinyshakespeare (4 x 512 tokens, Fisher on), evaluate 4 Moby Dick windows of 512.
/// Quality must order by bits, and outliers must pay for themselves at 3 bits.
/// </summary>
public class KvQuantEndToEndTests(ITestOutputHelper output)
{
    [Fact]
    public void PerplexityOrdersByBitsOnBooks19m()
    {
        using var loaded = ModelLoader.Load(Fixtures.BooksGguf);
        var model = new Transformer(loaded.Weights, new Parallelism(2));
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var profile = KvQuantCalibrator.Calibrate(model, TextFixtures.Read(Fixtures.Text("tinyshakespeare/input.txt")), "input.txt",
            loaded.Tokenizer, new KvQuantCalibrateOptions(Samples: 4, Length: 512, SinkTokens: 1, Seed: 0, Threads: 2)).Profile;
        output.WriteLine($"calibration {sw.Elapsed.TotalSeconds:F1} s");
        Assert.Equal(loaded.Weights.Fingerprint, profile.ModelFingerprint);
        Assert.True(profile.Settings.Fisher);

        // Only the first windows of Moby Dick are needed: tokenize a prefix.
        var moby = TextFixtures.Read(Fixtures.MobyDick);
        var tokens = loaded.Tokenizer.Encode(moby[..Math.Min(moby.Length, 40000)], addBos: false);
        var eval = new PerplexityEvaluator(model, loaded.Tokenizer.BosId);
        double Ppl(string spec) => eval.Evaluate(tokens, 512, 4, KvCacheConfig.Parse(spec) with { Profile = profile, SinkTokens = 1 }).Ppl;
        var ppl = new Dictionary<string, double>();
        foreach (var spec in new[] { "f16", "nuq4-1%", "nuq3-1%", "nuq2-1%", "nuq3" }) ppl[spec] = Ppl(spec);
        foreach (var (k, v) in ppl) output.WriteLine($"{k,-8} {v:F4}  {(v / ppl["f16"] - 1) * 100:+0.00;-0.00}%");
        output.WriteLine($"total {sw.Elapsed.TotalSeconds:F1} s");
        Assert.True(ppl["f16"] < ppl["nuq4-1%"]);
        Assert.True(ppl["nuq4-1%"] < ppl["nuq3-1%"]);
        Assert.True(ppl["nuq3-1%"] < ppl["nuq2-1%"]);
        Assert.True(ppl["nuq3-1%"] < ppl["nuq3"], "1% outliers must beat dense-only at 3 bits");
        Assert.True(ppl["nuq4-1%"] < ppl["f16"] * 1.02, "nuq4-1% within 2% of f16");
    }
}
