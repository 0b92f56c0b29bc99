using Kvq.Cache;
using Kvq.Cache.Policies;
using Kvq.Serving;

namespace Kvq.Tests.Serving;

/// <summary>
/// Token policies inside the serving engine: each request keeps at most its policy's budget, so a bounded pool runs
/// more long requests at once, and a request's tokens do not depend on what else runs or on being preempted.
/// </summary>
public sealed class PolicyEngineTests
{
    private static KvCacheConfig Config(string kv, string policy, string budget) =>
        KvCacheConfig.Parse(kv) with { Policy = new KvPolicyConfig(KvPolicyRegistry.Parse(policy), KvBudget.Parse(budget)) };

    private static int[][] Prompts(int count) =>
        Enumerable.Range(0, count).Select(i => EngineFixtures.MobyPrompt(41000 + 700 * i, 150 + 37 * i)).ToArray();

    /// <summary>H2O (attention-driven) and TOVA with budgets that grow with the length, no decode reserve and a pool
    /// too small for the requests together: some are preempted and recomputed, yet every request gets exactly the
    /// tokens of a lone run with the same policy (prompt in chunks of 64, one token per decode step), and the pool
    /// never passes its budget.</summary>
    [Theory]
    [InlineData("f16", "h2o", "0.9", 14)]
    [InlineData("int8", "tova", "0.8", 12)]
    public async Task PolicyRequestsUnderPressureGiveTheirLoneTokens(string kv, string policy, string budget, int poolBlocks)
    {
        var m = EngineFixtures.Books;
        var config = Config(kv, policy, budget);
        var prompts = Prompts(6);
        const int maxTokens = 64;
        var expected = prompts.Select(p => EngineFixtures.SoloGreedy(m, p, maxTokens, config)).ToArray();
        var probe = new KvPool(EngineFixtures.Model(m).KvShape, config, 64 << 20);
        long poolBytes = poolBlocks * probe.BytesPerBlock;
        long maxInUse = 0;
        using var engine = new InferenceEngine(EngineFixtures.Model(m, 128), m.Tokenizer, new EngineOptions
        {
            Kv = config, KvBudgetBytes = poolBytes, DecodeReserveTokens = 0,
        });
        engine.StepCompleted += s => maxInUse = Math.Max(maxInUse, s.KvBytes);
        var results = await Task.WhenAll(prompts.Select(p => EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(p, maxTokens)))));
        for (int i = 0; i < prompts.Length; i++)
            Assert.True(expected[i].SequenceEqual(results[i].Tokens),
                $"request {i} ({prompts[i].Length} prompt tokens, preempted {results[i].Preemptions}x): " +
                $"{string.Join(',', results[i].Tokens)} vs alone {string.Join(',', expected[i])}");
        Assert.True(results.Sum(r => r.Preemptions) > 0, "the pool was meant to force preemptions");
        Assert.InRange(maxInUse, 1, poolBytes);
        // Every layer's blocks are back.
        foreach (var layerPool in engine.Pool.Cache.LayerPools!) Assert.Equal(0, layerPool.HeldBlockCount);
    }

    /// <summary>The point of a policy in a server: long prompts each keep only their budget, so the same bytes run
    /// several times the requests at once that the full cache can.</summary>
    [Fact]
    public async Task ABoundedPolicyRunsMoreLongRequestsAtOnceThanTheFullCache()
    {
        var m = EngineFixtures.Books;
        var prompts = Enumerable.Range(0, 8).Select(i => EngineFixtures.MobyPrompt(52000 + 900 * i, 420)).ToArray();
        var full = KvCacheConfig.Parse("f16");
        var bounded = Config("f16", "streaming", "64");
        long budget = 40 * new KvPool(EngineFixtures.Model(m).KvShape, full, 64 << 20).BytesPerBlock;
        async Task<int> MaxRunning(KvCacheConfig config)
        {
            int most = 0;
            using var engine = EngineFixtures.Engine(m, config, budget, stepTokens: 128);
            engine.StepCompleted += s => most = Math.Max(most, s.Running);
            var results = await Task.WhenAll(prompts.Select(p => EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(p, 24)))));
            Assert.All(results, r => Assert.Equal(24, r.CompletionTokens));
            return most;
        }
        int fullRunning = await MaxRunning(full), boundedRunning = await MaxRunning(bounded);
        // 40 blocks of 32 tokens: the full cache fits 2 prompts of 421 tokens (+32 reserve) at once; 64 kept slots plus
        // a chunk of 64 need 4 blocks per layer, so every one of the 8 runs.
        Assert.Equal(2, fullRunning);
        Assert.Equal(8, boundedRunning);
    }

    [Fact]
    public void APolicyChunkThatIsNotAMultipleOf16IsRefused()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new InferenceEngine(EngineFixtures.Model(EngineFixtures.Stories, 128),
            EngineFixtures.Stories.Tokenizer, new EngineOptions
            {
                Kv = Config("f32", "h2o", "64"), KvBudgetBytes = 4 << 20, PolicyChunkTokens = 40,
            }));
        Assert.Contains("PolicyChunkTokens 40", e.Message);
    }
}
