using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Codecs.Rotation;
using Kvq.Calibration;
using Kvq.Calibration.Fisher;
using Kvq.Calibration.KvQuant;
using Kvq.Model;
using Kvq.Tensors;
using Kvq.Tests.Model;
using Xunit.Abstractions;

namespace Kvq.Tests.Calibration.Fisher;

/// <summary>
/// Fisher weights in the Hadamard-rotated basis (<c>kvq calibrate --rotate</c>): the rotated window's gradients are the
/// loss's derivatives along the rotated directions (finite differences through the injection hook), the activation
/// source squares those and not the plain ones, and a one-side rotation fits the other side exactly as an unrotated
/// calibration does.
/// </summary>
public class RotatedFisherTests(ITestOutputHelper output)
{
    private static readonly Parallelism Two = new(2);

    /// <summary>The f32 loss's derivative along rotated coordinate j of one Hadamard run (direction H e_j, spread over
    /// the run's channels in the pre-RoPE keys or the values) against the rotated window's gradient.</summary>
    [Theory]
    [InlineData("stories")]           // head dim 8: one run of 8 per head
    [InlineData("tiny48")]            // head dim 12: three runs of 4 per head (largest power of two dividing 12)
    public void RotatedGradientsAreTheDerivativesAlongTheRotatedDirections(string which)
    {
        using var tiny = which == "tiny48" ? CalibrationModels.Tiny(new TinyModelSpec(Dim: 48, Heads: 4, KvHeads: 2, Seed: 11)) : null;
        var weights = tiny ?? CalibrationModels.Stories;
        var tokens = CalibrationModels.StoriesWindow(21);
        int kvDim = weights.Config.KvDim, hd = weights.Config.HeadDim, n = Hadamard.BlockSize(hd);
        var g = CalibrationBackward.Compute(weights, tokens, Two);
        var plainGrads = g.Layers.Select(l => (K: (float[])l.KeyGradients.Clone(), V: (float[])l.ValueGradients.Clone())).ToArray();
        var plainKeys = g.Layers.Select(l => (float[])l.Keys.Clone()).ToArray();
        RotatedActivations.RotateWindow(g, hd, KvRotationSides.Both);

        // The rotated values and gradients are H/sqrt(n) applied per run, written out in f64.
        var rng = new Random(3);
        for (int check = 0; check < 50; check++)
        {
            int l = rng.Next(g.Layers.Length), t = rng.Next(tokens.Length), c = rng.Next(kvDim), start = c - c % n;
            double k = 0, gk = 0;
            for (int i = 0; i < n; i++)
            {
                k += Hadamard.Entry(c - start, i) * (double)plainKeys[l][t * kvDim + start + i];
                gk += Hadamard.Entry(c - start, i) * (double)plainGrads[l].K[t * kvDim + start + i];
            }
            Assert.Equal(k / Math.Sqrt(n), g.Layers[l].Keys[t * kvDim + c], 1e-4);
            Assert.Equal(gk / Math.Sqrt(n), g.Layers[l].KeyGradients[t * kvDim + c], Math.Max(1e-5 * Math.Abs(gk), 1e-12));
        }

        // Finite differences along the rotated directions, at the 16 largest rotated gradients of each side.
        var forward = new CalibrationForward(weights, Two);
        var elements = new List<(int Layer, bool Key, int Token, int Column, float Analytic)>();
        foreach (bool key in new[] { true, false })
            for (int l = 0; l < g.Layers.Length; l++)
            {
                var gr = key ? g.Layers[l].KeyGradients : g.Layers[l].ValueGradients;
                for (int i = 0; i < gr.Length; i++) elements.Add((l, key, i / kvDim, i % kvDim, gr[i]));
            }
        var picked = elements.Where(e => e.Key).OrderByDescending(e => Math.Abs(e.Analytic)).Take(16)
            .Concat(elements.Where(e => !e.Key).OrderByDescending(e => Math.Abs(e.Analytic)).Take(16)).ToList();
        const float eps = 1e-2f;
        double worst = 0;
        foreach (var e in picked)
        {
            int start = e.Column - e.Column % n, j = e.Column - start;
            double Loss(float delta)
            {
                forward.Injection = (layer, ks, vs) =>
                {
                    if (layer != e.Layer) return;
                    var x = e.Key ? ks : vs;
                    for (int i = 0; i < n; i++) x[e.Token * kvDim + start + i] += delta * (float)(Hadamard.Entry(i, j) / Math.Sqrt(n));
                };
                return forward.Run(tokens).Loss;
            }
            double fd = (Loss(eps) - Loss(-eps)) / (2 * eps);
            double rel = Math.Abs(e.Analytic - fd) / Math.Abs(fd);
            worst = Math.Max(worst, rel);
            // The plain gradient at the same index is another number: the check tells the bases apart.
            float plain = (e.Key ? plainGrads[e.Layer].K : plainGrads[e.Layer].V)[e.Token * kvDim + e.Column];
            output.WriteLine($"  L{e.Layer} {(e.Key ? 'K' : 'V')} t{e.Token,2} c{e.Column,3}: rotated {e.Analytic,12:E4} fd {fd,12:E4} (plain {plain,12:E4}) rel {rel:E1}");
            Assert.True(rel < 2e-2, $"L{e.Layer} {(e.Key ? 'K' : 'V')} t{e.Token} c{e.Column}: rotated gradient {e.Analytic:E5} vs finite difference {fd:E5}");
        }
        output.WriteLine($"worst relative error {worst:E2}");
        forward.Injection = null;
    }

    /// <summary>The activation source asked to rotate keys only: keys are H k, key weights (H dL/dk)^2 per window (not
    /// the run means that squared gradients alone allow), values and their weights as without rotation.</summary>
    [Fact]
    public void SourceRotatingKeysWeighsThemBySquaredRotatedGradients()
    {
        using var loaded = ModelLoader.Load(Fixtures.StoriesGguf);
        var model = new Transformer(loaded.Weights, Two);
        var windows = new[] { CalibrationModels.StoriesWindow(17), CalibrationModels.StoriesWindow(23)[3..] };
        var plain = new FisherActivationSource().Collect(model, windows, sink: 1);
        var rotated = new FisherActivationSource(KvRotationSides.Keys).Collect(model, windows, sink: 1);
        int kvDim = model.KvShape.KvDim, n = Hadamard.BlockSize(model.KvShape.HeadDim);
        int row = 0, runsUnlikeMean = 0;
        foreach (var w in windows)
        {
            var g = CalibrationBackward.Compute(loaded.Weights, w, Two);
            for (int t = 1; t < w.Length; t++, row++)
                for (int l = 0; l < model.KvShape.Layers; l++)
                    for (int start = 0; start < kvDim; start += n)
                    {
                        double runSum = 0, max = 0, min = double.MaxValue;
                        for (int j = 0; j < n; j++)
                        {
                            double gk = 0, k = 0;
                            for (int i = 0; i < n; i++)
                            {
                                gk += Hadamard.Entry(j, i) * (double)g.Layers[l].KeyGradients[t * kvDim + start + i];
                                k += Hadamard.Entry(j, i) * (double)g.Layers[l].Keys[t * kvDim + start + i];
                            }
                            gk /= Math.Sqrt(n);
                            k /= Math.Sqrt(n);
                            int at = row * kvDim + start + j;
                            Assert.Equal(k, rotated.Keys[l][at], 1e-4);
                            Assert.Equal(gk * gk, rotated.KeyWeights![l][at], Math.Max(2e-5 * gk * gk, 1e-14));   // f32 rotation: ~1e-6 relative
                            runSum += gk * gk;
                            max = Math.Max(max, gk * gk);
                            min = Math.Min(min, gk * gk);
                            Assert.Equal(plain.Values[l][at], rotated.Values[l][at]);
                            Assert.Equal(plain.ValueWeights![l][at], rotated.ValueWeights![l][at]);
                        }
                        if (max > 4 * min && max > 1e-12) runsUnlikeMean++;
                        // The rotation keeps each run's total weight (Parseval): what the run-mean approximation keeps.
                        double plainSum = 0;
                        for (int i = 0; i < n; i++) plainSum += plain.KeyWeights![l][row * kvDim + start + i];
                        Assert.Equal(plainSum, runSum, Math.Max(1e-4 * plainSum, 1e-14));
                    }
        }
        Assert.Equal(plain.Tokens, row);
        Assert.True(runsUnlikeMean > 10, $"only {runsUnlikeMean} runs have unequal rotated weights: the test could not tell them from run means");
    }

    /// <summary><c>--rotate-side keys</c>: the value fit is byte for byte the unrotated calibration's, the key fit the
    /// both-sides rotated calibration's; the profile says which side is rotated and the codecs hold the user to it.</summary>
    [Fact]
    public void KeysOnlyRotationFitsPlainValuesAndRotatedKeys()
    {
        using var loaded = ModelLoader.Load(Fixtures.BooksGguf);
        var model = new Transformer(loaded.Weights, Two);
        var text = TextFixtures.Read(Fixtures.Text("tinyshakespeare/input.txt"))[..20000];
        var options = new KvQuantCalibrateOptions(Samples: 2, Length: 40, SinkTokens: 1, Seed: 5, Threads: 2);
        KvQuantProfile Run(KvRotationSides s) =>
            KvQuantCalibrator.Calibrate(model, text, "input.txt", loaded.Tokenizer, options with { RotateSides = s }).Profile;
        var none = Run(KvRotationSides.None);
        var keys = Run(KvRotationSides.Keys);
        var both = Run(KvRotationSides.Both);
        Assert.Equal("input.txt" + RotatedSpec.ProfileKeysMarker, keys.Settings.Text);
        Assert.Equal("input.txt" + RotatedSpec.ProfileTextMarker, both.Settings.Text);
        for (int c = 0; c < none.Calibrations.Count; c++)
        {
            var (n, k, b) = (none.Calibrations[c], keys.Calibrations[c], both.Calibrations[c]);
            Assert.Equal(b.KeysPreRope.Zero, k.KeysPreRope.Zero);
            Assert.Equal(b.KeysPreRope.Range, k.KeysPreRope.Range);
            Assert.NotEqual(n.KeysPreRope.Range, k.KeysPreRope.Range);
            int valueBooks = 0;
            foreach (var (stream, layer, book) in k.Codebooks)
            {
                var expected = (stream == KvQuantStream.Value ? n : b).Codebook(stream, layer, book.Bits)!;
                Assert.Equal(expected.Levels, book.Levels);
                Assert.Equal(expected.Sensitivity, book.Sensitivity);
                if (stream == KvQuantStream.Value)
                {
                    valueBooks++;
                    Assert.NotEqual(b.Codebook(stream, layer, book.Bits)!.Levels, book.Levels);
                }
            }
            Assert.True(valueBooks > 0);
        }

        int hd = model.KvShape.HeadDim;
        var cfg = KvCacheConfig.Parse("nuq3-1%:rot/nuq3-1%") with { Profile = keys };
        Assert.IsType<RotatedCodec>(cfg.CreateCodec(KvSide.Key, 1, 0, hd));
        Assert.IsNotType<RotatedCodec>(cfg.CreateCodec(KvSide.Value, 1, 0, hd));
        var wrong = KvCacheConfig.Parse("nuq3-1%/nuq3-1%:rot") with { Profile = keys };
        var e = Assert.Throws<KvSpecException>(() => wrong.CreateCodec(KvSide.Value, 1, 0, hd));
        Assert.Contains("unrotated values", e.Message);
        Assert.True(RotatedSpec.ProfileRotates(both.Settings.Text, KvSide.Value));
        Assert.False(RotatedSpec.ProfileRotates(none.Settings.Text, KvSide.Key));
    }
}
