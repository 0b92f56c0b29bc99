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
        var streams = EngineFixtures.SubmitTogether(engine, prompts.Select(p => EngineFixtures.Greedy(p, maxTokens)).ToArray());
        var results = await Task.WhenAll(streams.Select(s => EngineFixtures.Collect(s)));
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

    /// <summary>
    /// Requests that share a 201-token system prompt under H2O and under a merging policy: the first leaves the policy's
    /// state after each whole 64-token chunk in the prefix cache, the next five (running at once) start from the state
    /// after 192 tokens, every one gets exactly the greedy tokens of a lone run (no sharing), and the prefix hit rate is
    /// above 0. Then half of four more requests are cancelled mid-stream: every layer's pool gets back every block it
    /// lent (cached prefix states stay, at reference count 0) and the pool never passes its budget.
    /// </summary>
    [Theory]
    [InlineData("f16", "h2o", "0.5")]
    [InlineData("q8_0", "merge", "96")]
    public async Task SharedSystemPromptsHitThePrefixCacheUnderAPolicy(string kv, string policy, string budget)
    {
        var m = EngineFixtures.Books;
        var config = Config(kv, policy, budget);
        var system = EngineFixtures.MobyPrompt(30000, 200);
        int[][] prompts = Enumerable.Range(0, 10)
            .Select(i => (int[])[.. system, .. EngineFixtures.MobyPrompt(61000 + 500 * i, 20 + 9 * i).AsSpan(1)]).ToArray();
        const int maxTokens = 12;
        var expected = prompts.Take(6).Select(p => EngineFixtures.SoloGreedy(m, p, maxTokens, config)).ToArray();
        long budgetBytes = 64 << 20, maxInUse = 0;
        using var engine = EngineFixtures.Engine(m, config, budgetBytes);
        engine.StepCompleted += s => maxInUse = Math.Max(maxInUse, s.KvBytes);
        var results = new List<CompletionResult> { await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(prompts[0], maxTokens))) };
        results.AddRange(await Task.WhenAll(prompts.Skip(1).Take(5).Select(p => EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(p, maxTokens))))));
        for (int i = 0; i < 6; i++)
            Assert.True(expected[i].SequenceEqual(results[i].Tokens),
                $"request {i} (cached {results[i].CachedPromptTokens}): {string.Join(',', results[i].Tokens)} vs alone {string.Join(',', expected[i])}");
        Assert.Equal(0, results[0].CachedPromptTokens);
        Assert.All(results.Skip(1), r => Assert.Equal(192, r.CachedPromptTokens));
        var snap = engine.Snapshot();
        Assert.Equal(5 * 192, snap.PrefixHitTokens);
        Assert.True(snap.PrefixHitRate > 0);

        var late = await EngineFixtures.ReadCancellingSome(engine,
            prompts.Skip(6).Select(p => EngineFixtures.Greedy(p, 40)).ToArray(), i => i % 2 == 0, after: 3);
        for (int i = 0; i < late.Length; i++)
            if (i % 2 == 0) Assert.Equal(FinishReason.Cancelled, late[i].FinishReason);
            else Assert.NotEqual(FinishReason.Cancelled, late[i].FinishReason);
        Assert.All(late, r => Assert.Equal(192, r.CachedPromptTokens));
        foreach (var layerPool in engine.Pool.Cache.LayerPools!)
        {
            Assert.Equal(0, layerPool.HeldBlockCount);
            Assert.Equal(0, layerPool.ReferenceCount);
            Assert.Equal(layerPool.BlockCount, layerPool.FreeBlockCount);
            Assert.True(layerPool.CachedFreeBlockCount > 0);
        }
        Assert.InRange(maxInUse, 1, budgetBytes);
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
