using Kvq.Cache;
using Kvq.Cache.Layout;
using Kvq.Cache.Offload;
using Kvq.Cache.Policies;
using Kvq.Eval;
using Kvq.Model.Loading;

namespace Kvq.Tests.Cache.Layout;

/// <summary>The layout plan's bytes of sliding-window rings (<see cref="KvCacheConfig.SlidingRing"/>): what
/// <c>kvq inspect</c> and <c>eval memory</c> report equals what a real paged cache holds, per layer, at lengths
/// around the window and block edges; and the plan refuses what rings do not combine with, naming it.</summary>
public class RingLayoutPlanTests
{
    private static KvShape Gemma3Shape()
    {
        using var weights = GgufModelLoader.Load(SyntheticFixtures.Get("gemma3"));
        return weights.Config.CreateKvShape();   // 6 layers: 0-4 slide over 32 tokens, 5 is global
    }

    [Theory]
    [InlineData("f16", 8)]
    [InlineData("q8_0", 16)]
    [InlineData("f32", 32)]
    public void PlanCountsWhatARealRingCacheHolds(string format, int blockTokens)
    {
        var shape = Gemma3Shape();
        var config = KvCacheConfig.Parse(format, blockTokens) with { SlidingRing = true };
        var plan = KvLayoutPlan.Build(shape, config);
        var full = KvLayoutPlan.Build(shape, config with { SlidingRing = false });
        foreach (int n in new[] { 1, 7, 31, 32, 33, 63, 65, 77, 157 })
        {
            var cache = new PagedKvCache(plan, maxTokens: n);
            using var seq = cache.CreateSequence();
            KvMemoryEvaluator.Fill(seq, shape, n, seed: n);
            Assert.Equal(seq.Memory().TotalBytes, plan.MemoryAt(n).TotalBytes);
            Assert.Equal(cache.HeldBytes, plan.BlockBytesAt(n));
            for (int l = 0; l < shape.Layers; l++)
            {
                Assert.Equal(shape.WindowOf(l) > 0, plan.IsRing(l));
                Assert.Equal(full.BlocksFor(n), full.HeldBlocks(l, n));
                if (plan.RingBlocks(l) is { } bound)
                    Assert.InRange(plan.HeldBlocks(l, n), 1, bound);   // ceil(31 / B) + 1
                else
                    Assert.Equal(plan.BlocksFor(n), plan.HeldBlocks(l, n));
            }
            Assert.True(plan.BlockBytesAt(n) <= full.BlockBytesAt(n));
        }
        // Long past the window: the sliding layers stay at their bound, the global layer grows.
        Assert.Equal((31 + blockTokens - 1) / blockTokens + 1, plan.RingBlocks(0));
        Assert.Null(plan.RingBlocks(5));
        long at4k = plan.BlockBytesAt(4096), at8k = plan.BlockBytesAt(8192);
        Assert.Equal(4096 / blockTokens * plan.BytesPerLayerBlock(5), at8k - at4k);
    }

    [Fact]
    public void PlanRefusesWhatRingsDoNotCombineWith()
    {
        var shape = Gemma3Shape();
        var ring = KvCacheConfig.Parse("f16") with { SlidingRing = true };
        void Refused(KvCacheConfig c, string what) =>
            Assert.Contains(what, Assert.Throws<KvSpecException>(() => KvLayoutPlan.Build(shape, c)).Message);
        Refused(ring with { SinkTokens = 4 }, "sink tokens (--sink 4)");
        Refused(ring with { Policy = new KvPolicyConfig(new StreamingLlmPolicy(4), KvBudget.Parse("64")) }, "a token policy");
        Refused(ring with { Offload = KvOffloadBudget.Parse("25%") }, "offloading");
        Refused(KvCacheConfig.Parse("kivi4") with { SlidingRing = true }, "a codec that stages recent tokens (kivi4)");
        // Without rings the same configs are fine; a model without windows takes rings and changes nothing.
        KvLayoutPlan.Build(shape, ring with { SlidingRing = false, SinkTokens = 4 });
        using var llama = GgufModelLoader.Load(SyntheticFixtures.Get("llama"));
        var plain = KvLayoutPlan.Build(llama.Config.CreateKvShape(), ring);
        Assert.Equal(plain.BlocksFor(100) * plain.BytesPerBlock, plain.BlockBytesAt(100));
    }
}
