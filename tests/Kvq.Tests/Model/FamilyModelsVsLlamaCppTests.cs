using Kvq.Cache;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;

namespace Kvq.Tests.Model;

/// <summary>
/// What the mixture-of-experts families need beyond <see cref="FamiliesVsLlamaCppTests"/> (which compares their logits
/// and greedy tokens with llama.cpp's, f32, f16 and Q8_0 weights): batched decode exactness, the CUDA refusal, and
/// calibration through the routing.
/// </summary>
public class FamilyModelsVsLlamaCppTests
{
    /// <summary>Mixture-of-experts decode rows batched with each other and with a prompt chunk of another sequence give
    /// each sequence bitwise its lone decode's logits (the serving engine's exactness), and every expert runs at most
    /// once per layer per step.</summary>
    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen2moe")]
    [InlineData("qwen3moe")]
    public void BatchedDecodeEqualsLoneDecode(string name)
    {
        using var weights = GgufModelLoader.Load(SyntheticFixtures.Get(name, GgmlType.Q8_0));
        var batchedModel = new Transformer(weights, new Parallelism(2), maxBatch: 32);
        var soloModel = new Transformer(weights, new Parallelism(2), maxBatch: 32);
        int vocab = weights.Config.VocabSize;
        var rng = new Random(9);
        int[] Prompt(int n) => Enumerable.Range(0, n).Select(i => i == 0 ? 1 : rng.Next(3, vocab)).ToArray();
        int[][] prompts = [Prompt(11), Prompt(30), Prompt(5)];
        var batched = prompts.Select(_ => batchedModel.CreateSequence(KvCacheConfig.Parse("f16"), 64)).ToArray();
        var solo = prompts.Select(_ => soloModel.CreateSequence(KvCacheConfig.Parse("f16"), 64)).ToArray();
        var logits = new float[vocab];
        var next = new int[prompts.Length];
        for (int i = 0; i < prompts.Length; i++)
        {
            batchedModel.Forward(prompts[i], batched[i], logits);
            soloModel.Forward(prompts[i], solo[i], logits);
            next[i] = ArgMax(logits);
        }
        var extra = batchedModel.CreateSequence(KvCacheConfig.Parse("f16"), 64);
        var extraPrompt = Prompt(24);
        var batchLogits = new float[4 * vocab];
        for (int step = 0; step < 5; step++)
        {
            var tokens = new List<int>(next);
            var segments = new List<BatchSegment>();
            for (int i = 0; i < prompts.Length; i++) segments.Add(new BatchSegment(batched[i], i, 1, Decode: true, Logits: true));
            if (step < 3)
            {
                tokens.AddRange(extraPrompt.AsSpan(step * 8, 8).ToArray());
                segments.Add(new BatchSegment(extra, prompts.Length, 8, Decode: false, Logits: false));
            }
            batchedModel.ForwardBatch(tokens.ToArray(), segments.ToArray(), batchLogits);
            for (int i = 0; i < prompts.Length; i++)
            {
                soloModel.Forward([next[i]], solo[i], logits);
                var row = batchLogits.AsSpan(i * vocab, vocab);
                for (int v = 0; v < vocab; v++)
                    Assert.True(BitConverter.SingleToInt32Bits(logits[v]) == BitConverter.SingleToInt32Bits(row[v]),
                        $"{name} step {step} sequence {i} token {v}: alone {logits[v]:R}, batched {row[v]:R}");
                next[i] = ArgMax(row);
            }
        }
    }

    /// <summary>The route trace that explains MoE differences (FamiliesVsLlamaCppTests): its margin is the k-th minus
    /// the next router logit of an independent per-row sort, and swapping at (layer, position) changes that position's
    /// logits (another expert ran) while every earlier position stays bitwise the same.</summary>
    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen2moe")]
    public void RouteTraceMeasuresMarginsAndSwapsOneRoute(string name)
    {
        using var weights = GgufModelLoader.Load(SyntheticFixtures.Get(name));
        int vocab = weights.Config.VocabSize, n = 40, used = weights.Config.Experts!.Used;
        var rng = new Random(TestSeeds.Of(name));
        var tokens = Enumerable.Range(0, n).Select(i => i == 0 ? 1 : rng.Next(3, vocab)).ToArray();
        float[] Run(IEnumerable<(int, int)>? swaps, out RouteTrace trace, List<float[]>? routerRows = null)
        {
            var model = new Transformer(weights, new Parallelism(2), maxBatch: 16);
            trace = new RouteTrace(model, swaps);
            var inner = model.ExpertFfn!.RouterHook!;
            if (routerRows != null)
                model.ExpertFfn.RouterHook = (layer, logits, rows) =>
                {
                    if (layer == 1) for (int r = 0; r < rows; r++) routerRows.Add(logits.Slice(r * (logits.Length / rows), logits.Length / rows).ToArray());
                    inner(layer, logits, rows);
                };
            var logits = new float[n * vocab];
            model.Forward(tokens, model.CreateSequence(KvCacheConfig.Parse("f32"), n), default, logits);
            return logits;
        }
        var rows = new List<float[]>();
        var plain = Run(null, out var trace, rows);
        Assert.Equal(n, rows.Count);
        for (int p = 0; p < n; p++)
        {
            var sorted = rows[p].OrderDescending().ToArray();
            Assert.Equal(sorted[used - 1] - sorted[used], trace.Margin(1, p));
            Assert.True(trace.Margin(1, p) >= 0);
        }
        const int at = 23;
        var swapped = Run([(1, at)], out var swappedTrace);
        Assert.Equal(1, swappedTrace.Swapped);
        // Prefill runs in chunks of 16: positions of earlier chunks are bitwise the same; those of the swap's own chunk
        // may move in the last bits (an expert's batched product sees one row more or less), not more.
        Assert.True(plain.AsSpan(0, 16 * vocab).SequenceEqual(swapped.AsSpan(0, 16 * vocab)), "positions of earlier chunks changed");
        for (int i = 16 * vocab; i < at * vocab; i++)
            Assert.True(Math.Abs(plain[i] - swapped[i]) <= 1e-4f * (1 + Math.Abs(plain[i])), $"position {i / vocab} before the swap moved: {plain[i]} vs {swapped[i]}");
        double diff = 0;
        for (int v = 0; v < vocab; v++) diff = Math.Max(diff, Math.Abs(plain[at * vocab + v] - swapped[at * vocab + v]));
        Assert.True(diff > 1e-3, $"swapping position {at}'s route changed its logits by only {diff}");
    }

    [Fact]
    public void ExpertModelsRefuseCudaWithTypedErrors()
    {
        using var weights = GgufModelLoader.Load(SyntheticFixtures.Get("mixtral"));
        Assert.NotNull(weights.Config.Experts);
        var c = Assert.Throws<UnsupportedArchitectureException>(() => Cuda.Model.CudaArchitectureSupport.Check(weights.Config));
        Assert.Contains("CUDA", c.Message);
        Assert.Throws<UnsupportedArchitectureException>(() => weights.Layers[0].DenseFfn("test"));
    }

    /// <summary>kvq calibrate writes a Fisher profile for a mixture-of-experts model (the backward pass goes through the
    /// routing; gradients checked in CalibrationGradientTests).</summary>
    [Fact]
    public void CalibrateCommandCalibratesAnExpertModel()
    {
        var dir = Path.Combine(Path.GetTempPath(), "kvq-moe-cal-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var text = Path.Combine(dir, "t.txt");
            File.WriteAllText(text, TextFixtures.Read(Fixtures.MobyDick)[..20000]);
            var outPath = Path.Combine(dir, "p.kvqp");
            var r = Eval.InProcessCli.Run("calibrate", "-m", SyntheticFixtures.Get("qwen2moe"), "--text", text, "-o", outPath, "--length", "64");
            Assert.True(r.Code == 0, $"exit {r.Code}: {r.Err}");
            Assert.True(File.Exists(outPath));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    private static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}
