using Kvq.Cache;
using Kvq.Cache.Policies;
using Kvq.Cache.Storage;
using Kvq.Serving;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache.Storage;

/// <summary>Cached prefix blocks that the pool evicts go to a host tier and come back into fresh blocks for a later
/// prompt (<see cref="HostPrefixTier"/>): the sequence then holds exactly what a pool hit would hold.</summary>
public sealed class HostPrefixTierTests
{
    /// <summary>Prompt A (161 tokens: 5 whole blocks of 32) runs in a pool of 7 blocks, then prompt B (6 blocks) evicts
    /// A's cached blocks; A again finds its 5 blocks in the host tier (none in the pool), and its logits after the last
    /// prompt token equal bit for bit those of a second sequence that found the same blocks in a large pool.</summary>
    [Theory]
    [InlineData("f16", 0)]
    [InlineData("q4_0/q8_0", 0)]
    [InlineData("nuq3-1%", 0)]
    [InlineData("nuq3-1%", 1)]
    [InlineData("f16", 4)]
    public void EvictedPrefixBlocksComeBackAsTheyWereStored(string spec, int sink)
    {
        var config = StorageFixtures.Config(spec, sink);
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        int vocab = model.Config.VocabSize;
        var a = EngineFixtures.MobyPrompt(4000, 160);
        var b = EngineFixtures.MobyPrompt(9000, 200);

        var small = new PagedKvCache(model.KvShape, config, maxTokens: 7 * 32);
        var tier = small.KeepEvictedPrefixes(64 << 20);
        var logits = new float[vocab];
        using (var first = small.CreateSequence(a)) model.Forward(a, first, logits);
        using (var other = small.CreateSequence(b)) model.Forward(b, other, logits);
        Assert.Equal(0, small.Sequences.Pool.Prefixes.CountCachedBlocks(a));
        Assert.True(tier.Count >= 5, $"the tier holds {tier.Count} blocks");
        var fromTier = new float[vocab];
        using (var again = small.CreateSequence(a))
        {
            Assert.Equal(160, again.Length);
            Assert.Equal(5, tier.Hits);
            model.Forward(a.AsSpan(again.Length), again, fromTier);
        }

        Assert.Equal(StorageFixtures.PoolHitLogits(model, config, a, 160), fromTier);
        Assert.True(small.Sequences.Pool.Prefixes.CountCachedBlocks(a) == 5, "the blocks taken back are registered again");
    }

    /// <summary>With fewer free blocks than the tier holds for a prompt, a sequence takes back as many as fit and the
    /// rest stay in the tier, counted neither as hits nor as stored again.</summary>
    [Theory]
    [InlineData("f16", 0)]
    [InlineData("nuq3-1%", 1)]
    public void APromptTakesBackOnlyWhatFreeBlocksHold(string spec, int sink)
    {
        var config = StorageFixtures.Config(spec, sink);
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        var logits = new float[model.Config.VocabSize];
        var a = EngineFixtures.MobyPrompt(4000, 160);
        var b = EngineFixtures.MobyPrompt(9000, 200);
        var cache = new PagedKvCache(model.KvShape, config, maxTokens: 7 * 32);
        var tier = cache.KeepEvictedPrefixes(64 << 20);
        using (var first = cache.CreateSequence(a)) model.Forward(a, first, logits);
        using (var other = cache.CreateSequence(b)) model.Forward(b, other, logits);
        Assert.Equal(0, cache.Sequences.Pool.Prefixes.CountCachedBlocks(a));
        // A sequence of other tokens holds 5 of the 7 blocks: 2 stay free.
        using var holder = cache.CreateSequence();
        holder.BeginChunk(EngineFixtures.MobyPrompt(12000, 150));
        int free = cache.Sequences.Pool.FreeBlockCount;
        Assert.Equal(2, free);
        Assert.True(tier.Count >= 5, $"the tier holds {tier.Count} blocks");
        using (var again = cache.CreateSequence(a))
        {
            Assert.Equal(free * 32, again.Length);
            Assert.Equal(free, tier.Hits);
            Assert.Equal(0, cache.Sequences.Pool.FreeBlockCount);
        }
        // The blocks not taken stayed in the tier: with the holder gone, the whole prefix is found (pool + tier).
        holder.Dispose();
        using var whole = cache.CreateSequence(a);
        Assert.Equal(160, whole.Length);
        Assert.Equal(0, tier.Dropped);
    }

    /// <summary>The tier keeps within its budget, dropping the least recently stored blocks first.</summary>
    [Fact]
    public void TheTierKeepsItsBudgetDroppingTheOldest()
    {
        var config = StorageFixtures.Config("f16", 0);
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        var cache = new PagedKvCache(model.KvShape, config, maxTokens: 4 * 32);
        long blockBytes = cache.Plan.BytesPerBlock;
        var tier = cache.KeepEvictedPrefixes(3 * blockBytes);
        var logits = new float[model.Config.VocabSize];
        var prompts = Enumerable.Range(0, 4).Select(i => EngineFixtures.MobyPrompt(5000 + 700 * i, 96)).ToArray();   // 3 whole blocks each
        foreach (var p in prompts)
            using (var s = cache.CreateSequence(p)) model.Forward(p, s, logits);
        Assert.InRange(tier.Bytes, 1, tier.BudgetBytes);
        Assert.Equal(3, tier.Count);
        Assert.True(tier.Dropped > 0);
        // The newest evicted blocks are the ones kept: the oldest prompt's first blocks are gone.
        using var oldest = cache.CreateSequence(prompts[0]);
        Assert.Equal(0, oldest.Length);
    }

    [Theory]
    [InlineData("kivi2")]
    [InlineData("f16", "h2o")]
    public void FormatsThatCannotKeepPrefixesAreRefusedWithTheReason(string spec, string? policy = null)
    {
        var config = KvCacheConfig.Parse(spec);
        if (policy != null) config = config with { Policy = new KvPolicyConfig(KvPolicyRegistry.Parse(policy), KvBudget.Parse("64")) };
        var cache = new PagedKvCache(EngineFixtures.Model(EngineFixtures.Books).KvShape, config);
        var e = Assert.Throws<KvSpecException>(() => cache.KeepEvictedPrefixes(1 << 20));
        Assert.Contains(policy != null ? "policy states shared in the pool only" : "stages recent tokens", e.Message, StringComparison.Ordinal);
    }

    /// <summary>In the engine, with a pool that holds two prompts: the first prompt, evicted by two others, is found
    /// again (192 of its 201 tokens) with the host tier and not without, and answers the same greedy tokens.</summary>
    [Fact]
    public async Task TheEngineServesAnEvictedPrefixFromHostMemory()
    {
        var m = EngineFixtures.Books;
        var plan = Kvq.Cache.Layout.KvLayoutPlan.Build(EngineFixtures.Model(m).KvShape, KvCacheConfig.Parse("f16"));
        long budget = 8 * plan.BytesPerBlock;   // one prompt (201 tokens + 32 of decode reserve) at a time
        var prompts = new[] { EngineFixtures.MobyPrompt(7000, 200), EngineFixtures.MobyPrompt(11000, 200), EngineFixtures.MobyPrompt(15000, 200) };
        var cached = new List<int>();
        var tokens = new List<IReadOnlyList<int>>();
        foreach (long host in new long[] { 0, 64 << 20 })
        {
            using var engine = new InferenceEngine(EngineFixtures.Model(m), m.Tokenizer, new EngineOptions
            {
                Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = budget, HostPrefixBytes = host,
            });
            foreach (var p in prompts) await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(p, 8)));
            var again = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(prompts[0], 8)));
            cached.Add(again.CachedPromptTokens);
            tokens.Add(again.Tokens);
        }
        Assert.Equal([0, 192], cached);
        Assert.Equal(tokens[0], tokens[1]);
    }
}
