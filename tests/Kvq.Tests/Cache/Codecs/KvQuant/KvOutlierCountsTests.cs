using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Model;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>Outliers stored exactly are counted per sequence (<see cref="KvOutlierCounts"/>), not per process: two
/// sequences that run in the same batch steps of one shared cache, as the serving engine runs them, each report what
/// their own tokens stored, the same counts as when each runs alone.</summary>
public sealed class KvOutlierCountsTests
{
    [Theory]
    [InlineData("nuq3-1%")]
    [InlineData("nuq4-1%:token")]
    public void TwoSequencesInOneBatchReportTheirOwnCounts(string spec)
    {
        var loaded = EngineFixtures.Books;
        var model = EngineFixtures.Model(loaded, 256);
        var shape = model.KvShape;
        var config = KvCacheConfig.Parse(spec) with { Profile = KvQuantTestData.Profile(shape, tokens: 600) };
        var a = EngineFixtures.MobyPrompt(3000, 90);    // 91 tokens
        var b = EngineFixtures.MobyPrompt(20000, 57);   // 58 tokens
        var logits = new float[2 * model.Config.VocabSize];

        (KvOutlierCounts K, KvOutlierCounts V) Alone(int[] prompt)
        {
            using var seq = new PagedKvCache(shape, config).CreateSequence();
            model.Forward(prompt, seq, logits.AsSpan(0, model.Config.VocabSize));
            return (seq.KeyOutliers, seq.ValueOutliers);
        }
        var soloA = Alone(a);
        var soloB = Alone(b);

        // Both prompts in chunks of 16 tokens per step, one shared cache (as the engine's pool).
        var shared = new PagedKvCache(shape, config);
        using var sa = shared.CreateSequence();
        using var sb = shared.CreateSequence();
        for (int start = 0; start < a.Length; start += 16)
        {
            var tokens = new List<int>();
            var segments = new List<BatchSegment>();
            foreach (var (seq, prompt) in new[] { (sa, a), (sb, b) })
            {
                int n = Math.Min(16, prompt.Length - start);
                if (n <= 0) continue;
                segments.Add(new BatchSegment(seq, tokens.Count, n, Decode: false, Logits: start + n == prompt.Length));
                tokens.AddRange(prompt.AsSpan(start, n).ToArray());
            }
            model.ForwardBatch(tokens.ToArray(), segments.ToArray(), logits);
        }

        int perToken = shape.Layers * shape.KvHeads;
        Assert.Equal(a.Length * perToken, sa.KeyOutliers.Vectors);
        Assert.Equal(b.Length * perToken, sb.ValueOutliers.Vectors);
        Assert.Equal(sa.KeyOutliers.Vectors * shape.HeadDim, sa.KeyOutliers.Elements);
        Assert.True(soloA.K.Outliers > 0 && soloA.V.Outliers > 0 && soloB.K.Outliers > 0, $"{soloA} {soloB}");
        Assert.Equal(soloA, (sa.KeyOutliers, sa.ValueOutliers));
        Assert.Equal(soloB, (sb.KeyOutliers, sb.ValueOutliers));
        Assert.NotEqual(sa.KeyOutliers, sb.KeyOutliers);
    }
}
