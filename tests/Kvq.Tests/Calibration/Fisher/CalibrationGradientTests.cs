using Kvq.Calibration.Fisher;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;
using Kvq.Tests.Model;
using Xunit.Abstractions;

namespace Kvq.Tests.Calibration.Fisher;

/// <summary>
/// End to end: d loss / d K (pre-RoPE) and d loss / d V of the calibration backward pass against central finite
/// differences of the loss, nudging one element inside a forward pass.
/// </summary>
public class CalibrationGradientTests(ITestOutputHelper output)
{
    private static readonly Parallelism Two = new(2);

    /// <summary>~20 K and 20 V elements (layer, token, column) drawn at random; never the last token (no gradient).</summary>
    private static List<(int Layer, bool Key, int Token, int Column)> Elements(ModelConfig c, int tokens, int count, int seed)
    {
        var rng = new Random(seed);
        var list = new List<(int, bool, int, int)>();
        for (int i = 0; i < 2 * count; i++)
            list.Add((rng.Next(c.Layers), i % 2 == 0, rng.Next(tokens - 1), rng.Next(c.KvDim)));
        return list;
    }

    private static float Analytic(KvGradients g, (int Layer, bool Key, int Token, int Column) e) =>
        (e.Key ? g.Layers[e.Layer].KeyGradients : g.Layers[e.Layer].ValueGradients)[e.Token * g.KvDim + e.Column];

    /// <summary>Root mean square of all K or V gradients of a layer: the scale below which an element's error is noise.</summary>
    private static double Rms(float[] a)
    {
        double s = 0;
        foreach (var x in a) s += (double)x * x;
        return Math.Sqrt(s / a.Length);
    }

    private void CheckAgainstFloat64(ModelWeights weights, int[] tokens, int seed)
    {
        var g = CalibrationBackward.Compute(weights, tokens, Two);
        var reference = new ReferenceModel64(weights);
        double loss64 = reference.Loss(tokens);
        output.WriteLine($"{weights.Config.Architecture} {weights.Config.RopeStyle} heads {weights.Config.Heads}/{weights.Config.KvHeads}: loss f32 {g.Loss:F7} float64 {loss64:F7}");
        Assert.Equal(loss64, g.Loss, 1e-4);

        const double eps = 1e-3;
        double worst = 0;
        foreach (var e in Elements(weights.Config, tokens.Length, 20, seed))
        {
            double up = reference.Loss(tokens, new KvNudge(e.Layer, e.Key, e.Token, e.Column, eps));
            double down = reference.Loss(tokens, new KvNudge(e.Layer, e.Key, e.Token, e.Column, -eps));
            double fd = (up - down) / (2 * eps);
            double an = Analytic(g, e);
            var layer = g.Layers[e.Layer];
            double floor = 1e-2 * Rms(e.Key ? layer.KeyGradients : layer.ValueGradients);
            double rel = Math.Abs(an - fd) / Math.Max(Math.Abs(fd), floor);
            worst = Math.Max(worst, rel);
            output.WriteLine($"  L{e.Layer} {(e.Key ? 'K' : 'V')} t{e.Token,2} c{e.Column,3}: analytic {an,13:E5} fd {fd,13:E5} rel {rel:E1}");
            Assert.True(rel < 1e-2, $"L{e.Layer} {(e.Key ? 'K' : 'V')} t{e.Token} c{e.Column}: analytic {an:E5} vs finite difference {fd:E5}");
        }
        output.WriteLine($"worst relative error {worst:E2}");
    }

    [Fact]
    public void Stories_gradients_match_float64_finite_differences() =>
        CheckAgainstFloat64(CalibrationModels.Stories, CalibrationModels.StoriesWindow(24), seed: 1);

    [Theory]
    [InlineData("qwen2", 1, true)]    // neox RoPE, q/k/v biases, MQA (group size 4), tied output
    [InlineData("llama", 4, false)]   // group size 1
    public void Tiny_model_gradients_match_float64_finite_differences(string arch, int kvHeads, bool biases)
    {
        using var w = CalibrationModels.Tiny(new TinyModelSpec(arch, KvHeads: kvHeads, Biases: biases, Tied: biases, Seed: 3));
        Assert.Equal(arch == "qwen2" ? RopeStyle.Neox : RopeStyle.Normal, w.Config.RopeStyle);
        CheckAgainstFloat64(w, CalibrationModels.StoriesWindow(19), seed: 2);
    }

    /// <summary>The new operators of the model families: QK-norm (qwen3), RoPE frequency factors (llama3), YaRN's query
    /// magnitude (qwen2-yarn), and a sliding window over a few tokens (mistral, window 5 of a 19-token window).</summary>
    [Theory]
    [InlineData("qwen3")]
    [InlineData("llama3")]
    [InlineData("qwen2-yarn")]
    [InlineData("mistral-swa")]
    [InlineData("phi3")]   // fused q|k|v and gate|up: row views of one matrix each
    [InlineData("phi3-partial")]   // half of each head rotates
    [InlineData("gemma2")] // embedding scale, GeGLU, post-norms, attention and final soft-caps, window 5 on layer 0
    [InlineData("gemma3")] // QK-norm, post-norms, GeGLU, local RoPE base on the sliding layer 0, global layer 1
    [InlineData("mixtral")]  // experts: router softmax, top-2, renormalised weights
    [InlineData("qwen2moe")] // weights as they are, sigmoid-gated shared expert
    [InlineData("qwen3moe")] // QK-norm and experts
    public void Family_gradients_match_float64_finite_differences(string name)
    {
        var spec = SyntheticFixtures.Spec(name) with { Layers = 2 };
        if (name is "mistral-swa" or "gemma2" or "gemma3") spec = spec with { SlidingWindow = 5 };
        // Gemma 3 slides on 5 of every 6 layers: a period of 2 gives the 2-layer check one sliding and one global layer.
        if (name == "gemma3") spec = spec with { ExtraMetadata = [Kvq.Formats.Gguf.Synthetic.SyntheticMetadata.U32("gemma3.attention.sliding_window_pattern", 2)] };
        using var w = GgufModelLoader.Load(SyntheticFixtures.Write(spec with { Name = spec.Name + "-fisher" }));
        Assert.True(name != "qwen3" || w.Config.QkNorm);
        Assert.True(name != "mistral-swa" || w.Config.WindowOf(0) == 5);
        Assert.True(!name.StartsWith("gemma") || (w.Config.WindowOf(0) == 5 && w.Config.WindowOf(1) == 0));
        CheckAgainstFloat64(w, CalibrationModels.StoriesWindow(19), seed: 4);
    }

    [Fact]
    public void Stories_gradients_match_f32_finite_differences_through_the_injection_hook()
    {
        var weights = CalibrationModels.Stories;
        var tokens = CalibrationModels.StoriesWindow(24);
        var g = CalibrationBackward.Compute(weights, tokens, Two);
        var forward = new CalibrationForward(weights, Two);
        // In f32 the loss carries ~1e-7 of rounding noise: a larger step and the elements with the largest gradients
        // keep the difference quotient meaningful.
        const float eps = 1e-2f;
        var elements = Elements(weights.Config, tokens.Length, 200, seed: 5)
            .Distinct().OrderByDescending(e => Math.Abs(Analytic(g, e))).Take(20).ToList();
        double worst = 0;
        foreach (var e in elements)
        {
            double Loss(float delta)
            {
                forward.Injection = (l, k, v) =>
                {
                    if (l == e.Layer) (e.Key ? k : v)[e.Token * weights.Config.KvDim + e.Column] += delta;
                };
                return forward.Run(tokens).Loss;
            }
            double fd = (Loss(eps) - Loss(-eps)) / (2 * eps);
            double an = Analytic(g, e);
            double rel = Math.Abs(an - fd) / Math.Abs(fd);
            worst = Math.Max(worst, rel);
            output.WriteLine($"  L{e.Layer} {(e.Key ? 'K' : 'V')} t{e.Token,2} c{e.Column,3}: analytic {an,13:E5} fd {fd,13:E5} rel {rel:E1}");
            Assert.True(rel < 2e-2, $"L{e.Layer} {(e.Key ? 'K' : 'V')} t{e.Token} c{e.Column}: analytic {an:E5} vs finite difference {fd:E5}");
        }
        output.WriteLine($"worst relative error {worst:E2}");
        forward.Injection = null;
        Assert.Equal(g.Loss, forward.Run(tokens).Loss);   // the hook left no trace
    }

    [Fact]
    public void The_last_token_gets_no_gradient_and_the_rest_do()
    {
        // K/V of the last token only reach its own logits, which predict nothing in the window.
        var g = CalibrationBackward.Compute(CalibrationModels.Stories, CalibrationModels.StoriesWindow(24), Two);
        int kvDim = g.KvDim;
        foreach (var layer in g.Layers)
        {
            Assert.All(layer.KeyGradients.AsSpan(23 * kvDim).ToArray(), x => Assert.Equal(0f, x));
            Assert.All(layer.ValueGradients.AsSpan(23 * kvDim).ToArray(), x => Assert.Equal(0f, x));
            Assert.All(layer.KeyGradients, x => Assert.True(float.IsFinite(x)));
            Assert.True(Rms(layer.KeyGradients.AsSpan(0, 23 * kvDim).ToArray()) > 0);
            Assert.True(Rms(layer.ValueGradients.AsSpan(0, 23 * kvDim).ToArray()) > 0);
        }
    }
}
