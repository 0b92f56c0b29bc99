using Kvq.Sampling;

namespace Kvq.Tests.Sampling;

/// <summary>
/// The sampler at the edges of its rules, as llama.cpp has them: the token that brings top-p's mass exactly to p stays,
/// min-p keeps tokens exactly at the threshold, greedy takes the first of equal maxima, logits far from zero neither
/// overflow nor lose their tail, history ids outside the vocabulary are ignored, and all 64 bits of a seed count.
/// (Each of these was a surviving mutant of the Stryker run in docs/testing.md.)
/// </summary>
public class SamplerBoundaryTests
{
    private static readonly SamplerOptions Plain = new() { Temperature = 1f, TopK = 0, TopP = 1f, MinP = 0f, Seed = 11 };

    [Fact]
    public void TopPKeepsTheTokenWhoseMassReachesPExactly()
    {
        // Four equal logits (0.25 each, exactly) and three whose probability underflows to 0: 0.25 + 0.25 = 0.5 = p.
        float[] logits = [1.3f, -900f, 1.3f, -850f, 1.3f, 1.3f, -990f];
        var d = new Sampler(Plain with { TopP = 0.5f }).Distribution(logits, []);
        Assert.Equal(2, d.Length);
        Assert.All(d, c => Assert.Equal(0.5, c.P));
    }

    [Fact]
    public void MinPKeepsTokensExactlyAtTheThreshold()
    {
        // min-p = 1: the threshold is the top probability itself, which the three tied tokens all reach.
        float[] logits = [2.5f, -0.7f, 2.5f, 1.1f, -3.2f, 2.5f, 0.4f];
        var d = new Sampler(Plain with { MinP = 1f }).Distribution(logits, []);
        Assert.Equal(new[] { 0, 2, 5 }, d.Select(c => c.Id).Order());
        Assert.All(d, c => Assert.Equal(1.0 / 3, c.P, 12));
    }

    [Fact]
    public void GreedyTakesTheFirstOfEqualMaxima()
    {
        float[] logits = [0.3f, -1.2f, 2.9f, 0.8f, -0.4f, 1.7f, 2.9f, -2.2f, 0.1f];
        Assert.Equal(2, new Sampler(SamplerOptions.Greedy).Sample(logits, []));
    }

    [Fact]
    public void LogitsFarFromZeroKeepTheirTailAndDoNotOverflow()
    {
        // One logit 45+ above the rest: at temperature 1 the rest sum to ~1e-18 of the mass (1 - that rounds to 1.0),
        // yet with top-p off every token keeps its (tiny) probability; at 300 and beyond, exp(2 logit / T) would overflow.
        var rng = new Random(TestSeeds.Of(nameof(LogitsFarFromZeroKeepTheirTailAndDoNotOverflow)));
        var logits = Enumerable.Range(0, 51).Select(_ => (float)(300 + rng.NextDouble() * 15)).ToArray();
        logits[17] = 361.5f;
        foreach (float temperature in new[] { 1.7f, 0.5f })
        {
            var o = Plain with { Temperature = temperature };
            var expect = ReferenceSampling.Probabilities(logits, [], o);
            var d = new Sampler(o).Distribution(logits, []);
            Assert.Equal(logits.Length, d.Length);
            foreach (var (id, p) in d)
                Assert.True(p > 0 && Math.Abs(p - expect[id]) <= 1e-9, $"T={temperature} token {id}: {p} vs {expect[id]}");
        }
    }

    [Fact]
    public void HistoryIdsOutsideTheVocabularyAreIgnored()
    {
        var rng = new Random(TestSeeds.Of(nameof(HistoryIdsOutsideTheVocabularyAreIgnored)));
        var logits = Enumerable.Range(0, 23).Select(_ => (float)(rng.NextDouble() * 6 - 3)).ToArray();
        var o = Plain with { RepetitionPenalty = 1.4f, Temperature = 0.7f };
        int[] history = [23, 5, -1, 24, 9, int.MaxValue, 23];
        var expect = ReferenceSampling.Probabilities(logits, [5, 9], o);
        var d = new Sampler(o).Distribution(logits, history);
        Assert.Equal(logits.Length, d.Length);
        foreach (var (id, p) in d) Assert.Equal(expect[id], p, 6);
    }

    [Fact]
    public void EveryBitOfTheSeedCounts()
    {
        var rng = new Random(TestSeeds.Of(nameof(EveryBitOfTheSeedCounts)));
        var logits = Enumerable.Range(0, 31).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        int[] Draws(ulong seed)
        {
            var s = new Sampler(Plain with { Seed = seed });
            return Enumerable.Range(0, 64).Select(_ => s.Sample(logits, [])).ToArray();
        }
        const ulong Low = 0x5eed;
        var low = Draws(Low);
        foreach (int bit in new[] { 32, 40, 63 })
            Assert.NotEqual(low, Draws(Low | (1UL << bit)));
    }
}
