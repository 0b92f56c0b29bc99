using Kvq.Sampling;
using Xunit.Abstractions;

namespace Kvq.Tests.Sampling;

/// <summary>
/// The sampler's distribution against llama.cpp's chain restated in double precision (<see cref="ReferenceSampling"/>):
/// temperatures other than 1, top-k, top-p, min-p and the repetition penalty, alone and together, on random logits of
/// odd vocabulary sizes; draws against the reference by chi-square; the order of the steps; seed reproducibility.
/// Seeds are fixed and printed.
/// </summary>
public class SamplerReferenceTests(ITestOutputHelper output)
{
    /// <summary>temperature, top-k, top-p, min-p, repetition penalty, vocabulary.</summary>
    public static TheoryData<float, int, float, float, float, int> Settings() => new()
    {
        { 0.5f, 0, 1f, 0f, 1f, 53 },
        { 1.7f, 0, 1f, 0f, 1f, 53 },
        { 1f, 7, 1f, 0f, 1f, 101 },
        { 1.7f, 11, 1f, 0f, 1f, 101 },
        { 1f, 0, 0.8f, 0f, 1f, 101 },
        { 0.5f, 0, 0.8f, 0f, 1f, 101 },
        { 1.7f, 0, 0.6f, 0f, 1f, 101 },
        { 1f, 0, 1f, 0.2f, 1f, 101 },
        { 1.7f, 0, 1f, 0.1f, 1f, 101 },
        { 1f, 0, 1f, 0f, 1.3f, 61 },
        { 0.5f, 0, 1f, 0f, 1.7f, 61 },
        { 0.8f, 40, 0.95f, 0.05f, 1.1f, 301 }, // kvq generate's defaults, with a penalty
        { 1.3f, 9, 0.9f, 0.02f, 1.2f, 97 },
        { 0f, 0, 1f, 0f, 1.3f, 61 },          // greedy after the penalty
    };

    [Theory, MemberData(nameof(Settings))]
    public void DistributionEqualsReference(float temperature, int topK, float topP, float minP, float penalty, int vocab)
    {
        var o = new SamplerOptions { Temperature = temperature, TopK = topK, TopP = topP, MinP = minP, RepetitionPenalty = penalty, RepetitionWindow = 17 };
        int seed = TestSeeds.Of(nameof(DistributionEqualsReference), o, vocab);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var sampler = new Sampler(o);
        int cut = 0;
        for (int trial = 0; trial < 25; trial++)
        {
            var logits = Logits(rng, vocab);
            var history = Enumerable.Range(0, 29).Select(_ => rng.Next(vocab)).ToArray();
            var expect = ReferenceSampling.Probabilities(logits, history, o);
            var actual = Dense(sampler.Distribution(logits, history), vocab);
            for (int i = 0; i < vocab; i++)
            {
                Assert.True((expect[i] > 0) == (actual[i] > 0), $"trial {trial} (seed {seed}): token {i} {(expect[i] > 0 ? "dropped" : "kept")} ({actual[i]} vs {expect[i]})");
                Assert.True(Math.Abs(expect[i] - actual[i]) <= 1e-6, $"trial {trial} (seed {seed}): token {i}: {actual[i]} vs {expect[i]}");
            }
            Assert.Equal(1, actual.Sum(), 9);
            if (expect.Count(p => p > 0) < vocab) cut++;
        }
        // The settings that truncate must have truncated (else the comparison would not test them).
        if (topK > 0 || topP < 1 || minP > 0 || temperature == 0) Assert.True(cut == 25, $"only {cut} of 25 trials truncated");
    }

    [Theory]
    [InlineData(0.5f, 0, 1f, 0f, 1f, 23)]
    [InlineData(1.7f, 0, 1f, 0f, 1f, 23)]
    [InlineData(1.7f, 0, 0.9f, 0f, 1f, 31)]
    [InlineData(0.5f, 0, 1f, 0.01f, 1f, 31)]
    [InlineData(0.8f, 9, 0.95f, 0.05f, 1.3f, 41)]
    public void DrawsFollowTheReferenceByChiSquare(float temperature, int topK, float topP, float minP, float penalty, int vocab)
    {
        const int Draws = 40000;
        var o = new SamplerOptions { Temperature = temperature, TopK = topK, TopP = topP, MinP = minP, RepetitionPenalty = penalty };
        int seed = TestSeeds.Of(nameof(DrawsFollowTheReferenceByChiSquare), o, vocab);
        var rng = new Random(seed);
        var logits = Logits(rng, vocab);
        int[] history = [rng.Next(vocab), rng.Next(vocab), rng.Next(vocab)];
        var sampler = new Sampler(o with { Seed = (ulong)seed });
        var counts = new int[vocab];
        for (int i = 0; i < Draws; i++) counts[sampler.Sample(logits, history)]++;
        var (chi, df) = ReferenceSampling.ChiSquare(counts, ReferenceSampling.Probabilities(logits, history, o));
        double critical = ReferenceSampling.Critical(df);
        output.WriteLine($"seed {seed}: chi-square {chi:F2} on {df} degrees of freedom (fails above {critical:F2})");
        Assert.True(df >= 3, $"only {df + 1} bins: the draws test little");
        Assert.True(chi < critical, $"seed {seed}: chi-square {chi:F2} on {df} degrees of freedom above {critical:F2}");
    }

    /// <summary>
    /// The order of the steps is llama.cpp's: for each pair of neighbouring steps, swapping them changes the
    /// distribution on some of the random cases (so the test can tell), and the sampler matches llama.cpp's order on
    /// all of them. In particular top-p and min-p read probabilities at temperature 1, top-p over what top-k left, and
    /// the penalty acts before top-k.
    /// </summary>
    [Fact]
    public void StepsRunInLlamaCppOrder()
    {
        int seed = TestSeeds.Of(nameof(StepsRunInLlamaCppOrder));
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var canonical = ReferenceSampling.LlamaCppOrder;
        var distinguished = new int[canonical.Length - 1];
        foreach (float temperature in new[] { 0.5f, 1.7f })
        {
            var o = new SamplerOptions { Temperature = temperature, TopK = 13, TopP = 0.7f, MinP = 0.15f, RepetitionPenalty = 2.5f, RepetitionWindow = 9 };
            var sampler = new Sampler(o);
            for (int trial = 0; trial < 40; trial++)
            {
                var logits = Logits(rng, 37);
                // Penalise some of the most likely tokens, so that the penalty moves them across the top-k boundary.
                var history = Enumerable.Range(0, 37).OrderByDescending(i => logits[i]).Take(15).Where(_ => rng.Next(2) == 0).ToArray();
                var expect = ReferenceSampling.Probabilities(logits, history, o);
                var actual = Dense(sampler.Distribution(logits, history), 37);
                for (int i = 0; i < expect.Length; i++)
                    Assert.True(Math.Abs(expect[i] - actual[i]) <= 1e-6, $"T={temperature} trial {trial}: token {i}: {actual[i]} vs {expect[i]}");
                for (int s = 0; s < distinguished.Length; s++)
                {
                    var swapped = canonical.ToArray();
                    (swapped[s], swapped[s + 1]) = (swapped[s + 1], swapped[s]);
                    var other = ReferenceSampling.Probabilities(logits, history, o, swapped);
                    if (Enumerable.Range(0, expect.Length).Any(i => Math.Abs(other[i] - expect[i]) > 1e-3)) distinguished[s]++;
                }
            }
        }
        for (int s = 0; s < distinguished.Length; s++)
            Assert.True(distinguished[s] > 0, $"no case tells {canonical[s]} then {canonical[s + 1]} from the reverse");
    }

    [Fact]
    public void SameSeedSameDrawsAcrossInstances_OtherSeedsOtherDraws()
    {
        int seed = TestSeeds.Of(nameof(SameSeedSameDrawsAcrossInstances_OtherSeedsOtherDraws));
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var logits = Logits(rng, 77);
        var o = new SamplerOptions { Temperature = 1.7f, TopK = 0, TopP = 0.97f, MinP = 0.001f, RepetitionPenalty = 1.2f, Seed = (ulong)seed };
        int[] Draws(SamplerOptions opt)
        {
            var s = new Sampler(opt);
            var history = new List<int>();
            for (int i = 0; i < 300; i++) history.Add(s.Sample(logits, history.ToArray()));
            return [.. history];
        }
        var first = Draws(o);
        Assert.Equal(first, Draws(o));
        Assert.True(first.Distinct().Count() > 20, "the draws hardly vary: reproducibility would be trivial");
        foreach (ulong other in new ulong[] { o.Seed + 1, o.Seed * 3 + 7, 0 })
            Assert.NotEqual(first, Draws(o with { Seed = other }));
    }

    /// <summary>Random logits in (-4, 4) without zeros or ties.</summary>
    private static float[] Logits(Random rng, int n)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)((rng.NextDouble() * 0.9 + 0.1) * (rng.Next(2) == 0 ? 4 : -4));
        return x;
    }

    private static double[] Dense((int Id, double P)[] distribution, int vocab)
    {
        var d = new double[vocab];
        foreach (var (id, p) in distribution) d[id] = p;
        return d;
    }
}
