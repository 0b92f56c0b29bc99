using Kvq.Sampling;

namespace Kvq.Tests.Sampling;

public class SamplerTests
{
    private static float[] RandomLogits(int n, int seed)
    {
        var r = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(r.NextDouble() * 8 - 4);
        return x;
    }

    [Fact]
    public void GreedyPicksArgmax()
    {
        var logits = RandomLogits(1001, 1);
        int best = Array.IndexOf(logits, logits.Max());
        Assert.Equal(best, new Sampler(SamplerOptions.Greedy).Sample(logits, []));
    }

    [Fact]
    public void SameSeedSameDraws_DifferentSeedDifferentDraws()
    {
        var logits = RandomLogits(333, 2);
        var o = new SamplerOptions { Temperature = 1.5f, TopK = 0, TopP = 1, MinP = 0, Seed = 9 };
        int[] Draw(SamplerOptions opt) { var s = new Sampler(opt); return Enumerable.Range(0, 50).Select(_ => s.Sample(logits, [])).ToArray(); }
        Assert.Equal(Draw(o), Draw(o));
        Assert.NotEqual(Draw(o), Draw(o with { Seed = 10 }));
    }

    [Fact]
    public void TopKKeepsOnlyTheKMostLikely()
    {
        var logits = RandomLogits(257, 3);
        var top = logits.Select((v, i) => (v, i)).OrderByDescending(p => p.v).Take(5).Select(p => p.i).ToHashSet();
        var s = new Sampler(new SamplerOptions { Temperature = 5f, TopK = 5, TopP = 1, MinP = 0, Seed = 1 });
        for (int i = 0; i < 300; i++) Assert.Contains(s.Sample(logits, []), top);
    }

    [Fact]
    public void TopPAndMinPCutTheTail()
    {
        // Two tokens hold almost all the mass.
        var logits = Enumerable.Repeat(-5f, 100).ToArray();
        logits[17] = 5f;
        logits[42] = 4.5f;
        var s = new Sampler(new SamplerOptions { Temperature = 1f, TopK = 0, TopP = 0.9f, MinP = 0, Seed = 3 });
        var seen = Enumerable.Range(0, 500).Select(_ => s.Sample(logits, [])).ToHashSet();
        Assert.Subset(new HashSet<int> { 17, 42 }, seen);
        var m = new Sampler(new SamplerOptions { Temperature = 1f, TopK = 0, TopP = 1f, MinP = 0.7f, Seed = 3 });
        Assert.All(Enumerable.Range(0, 200).Select(_ => m.Sample(logits, [])), t => Assert.Equal(17, t));
    }

    [Fact]
    public void RepetitionPenaltyMovesAwayFromRecentTokens()
    {
        var logits = new float[10];
        logits[3] = 2f;
        logits[4] = 1.9f;
        var s = new Sampler(new SamplerOptions { Temperature = 0, RepetitionPenalty = 1.3f });
        Assert.Equal(4, s.Sample(logits, [3, 3, 7]));
        Assert.Equal(3, s.Sample(logits, [5]));
    }

    /// <summary>OpenAI's semantics: logit -= count x frequency + presence, counting generated tokens only.</summary>
    [Fact]
    public void PresenceAndFrequencyPenaltiesCountOnlyGeneratedTokens()
    {
        var logits = new float[10];
        logits[3] = 2f;
        logits[4] = 1.5f;
        logits[5] = 1.2f;
        // Token 3 is in the prompt only: no penalty.
        var presence = new Sampler(new SamplerOptions { Temperature = 0, PresencePenalty = 0.6f });
        Assert.Equal(3, presence.Sample(logits, [3, 3, 3], promptLength: 3));
        // Once generated: 2 - 0.6 < 1.5.
        Assert.Equal(4, presence.Sample(logits, [3, 3, 3, 3], promptLength: 3));
        // Presence counts once: generated twice is still 2 - 0.6 = 1.4 (above token 5's 1.2, below token 4's 1.5).
        Assert.Equal(4, presence.Sample(logits, [1, 3, 3], promptLength: 1));
        Assert.Equal(3, presence.Sample(logits, [1, 3, 3, 4], promptLength: 1));
        var frequency = new Sampler(new SamplerOptions { Temperature = 0, FrequencyPenalty = 0.3f });
        Assert.Equal(3, frequency.Sample(logits, [0, 3], promptLength: 1));          // 1.7 > 1.5
        Assert.Equal(4, frequency.Sample(logits, [0, 3, 3], promptLength: 1));       // 1.4 < 1.5
        Assert.Equal(5, frequency.Sample(logits, [0, 3, 3, 3, 4, 4], promptLength: 1)); // 1.1, 0.9 < 1.2
        // Negative penalties encourage repeats.
        var encourage = new Sampler(new SamplerOptions { Temperature = 0, PresencePenalty = -1f });
        Assert.Equal(5, encourage.Sample(logits, [5], promptLength: 0));
    }

    [Fact]
    public void DrawFrequenciesFollowTheSoftmax()
    {
        float[] logits = [0f, MathF.Log(2f), MathF.Log(3f)];
        var s = new Sampler(new SamplerOptions { Temperature = 1f, TopK = 0, TopP = 1, MinP = 0, Seed = 5 });
        var counts = new int[3];
        for (int i = 0; i < 60000; i++) counts[s.Sample(logits, [])]++;
        Assert.InRange(counts[0] / 60000.0, 1 / 6.0 - 0.01, 1 / 6.0 + 0.01);
        Assert.InRange(counts[2] / 60000.0, 0.5 - 0.01, 0.5 + 0.01);
    }
}
