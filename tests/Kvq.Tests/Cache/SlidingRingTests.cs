using Kvq.Cache;
using Kvq.Cache.Policies;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache;

/// <summary>
/// Sliding-window rings (<see cref="KvCacheConfig.SlidingRing"/>): a sliding layer keeps only the blocks its window can
/// still see, in a pool of its own. On the synthetic Gemma 3 (five sliding layers of window 32, one global) and
/// mistral-swa (every layer slides): logits bitwise equal to full storage over odd lengths in prefill chunks and
/// one-token decode, blocks held per sliding layer bounded by the window, and refusals of what rings do not combine with.
/// </summary>
public class SlidingRingTests(ITestOutputHelper output)
{
    private static readonly Parallelism Two = new(2);

    private static int[] Text(int n) => SharedModels.MobyDickTokens.AsSpan(7000, n).ToArray().Select(t => t % 512).ToArray();

    [Theory]
    [InlineData("gemma3", "f32", 8)]
    [InlineData("gemma3", "q8_0", 16)]
    [InlineData("mistral-swa", "f32", 8)]
    public void RingLogitsEqualFullStorage(string name, string kv, int blockTokens)
    {
        using var weights = GgufModelLoader.Load(SyntheticFixtures.Get(name));
        var model = new Transformer(weights, Two, maxBatch: 16);
        int window = Enumerable.Range(0, weights.Config.Layers).Max(l => weights.Config.WindowOf(l));
        Assert.Equal(32, window);
        var fullCache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse(kv, blockTokens));
        var ringCache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse(kv, blockTokens) with { SlidingRing = true });
        Assert.NotNull(ringCache.RingPools);
        Assert.False(ringCache.SupportsPrefixSharing);
        using var full = fullCache.CreateSequence();
        using var ring = ringCache.CreateSequence();
        int vocab = weights.Config.VocabSize;
        var tokens = Text(157); // 77 in prefill chunks of 16 (the last one odd), then 80 decoded one by one
        var a = new float[vocab * 77];
        var b = new float[vocab * 77];
        model.Forward(tokens.AsSpan(0, 77), full, default, a);
        model.Forward(tokens.AsSpan(0, 77), ring, default, b);
        Assert.Equal(a, b);
        var la = new float[vocab];
        var lb = new float[vocab];
        int bound = (window - 1 + blockTokens - 1) / blockTokens + 1;
        for (int t = 77; t < tokens.Length; t++)
        {
            model.Forward(tokens.AsSpan(t, 1), full, la);
            model.Forward(tokens.AsSpan(t, 1), ring, lb);
            Assert.True(la.AsSpan().SequenceEqual(lb), $"{name} {kv}: logits differ at position {t}");
            for (int l = 0; l < weights.Config.Layers; l++)
                if (ringCache.RingPools![l] is { } pool)
                    Assert.True(pool.HeldBlockCount <= bound, $"layer {l} holds {pool.HeldBlockCount} blocks at {t + 1} tokens, bound {bound}");
        }
        var mf = full.Memory();
        var mr = ring.Memory();
        output.WriteLine($"{name} {kv} B={blockTokens}, {tokens.Length} tokens: full {mf.TotalBytes:N0} B, ring {mr.TotalBytes:N0} B " +
                         $"(cache held {fullCache.HeldBytes:N0} vs {ringCache.HeldBytes:N0}; arenas {fullCache.AllocatedBytes:N0} vs {ringCache.AllocatedBytes:N0})");
        Assert.Equal(ringCache.HeldBytes, mr.TotalBytes);
        Assert.True(mr.TotalBytes < mf.TotalBytes);
        // What the sliding layers hold is the bound, not the length: the global layers alone grow.
        long perSliding = 0;
        for (int l = 0; l < weights.Config.Layers; l++)
            if (weights.Config.WindowOf(l) > 0) perSliding += bound * ringCache.BytesPerLayerBlock(l);
        long globalBytes = 0;
        for (int l = 0; l < weights.Config.Layers; l++)
            if (weights.Config.WindowOf(l) == 0) globalBytes += (tokens.Length + blockTokens - 1) / blockTokens * ringCache.BytesPerLayerBlock(l);
        Assert.True(mr.TotalBytes <= perSliding + globalBytes, $"{mr.TotalBytes} > {perSliding} + {globalBytes}");

        ring.Dispose();
        foreach (var pool in ringCache.RingPools!) Assert.True(pool == null || pool.HeldBlockCount == 0);
    }

    [Fact]
    public void RingsRefuseWhatTheyDoNotCombineWith()
    {
        using var weights = GgufModelLoader.Load(SyntheticFixtures.Get("gemma3"));
        var shape = new Transformer(weights, Two, maxBatch: 4).KvShape;
        var ring = KvCacheConfig.Parse("f16") with { SlidingRing = true };
        var e = Assert.Throws<KvSpecException>(() => new PagedKvCache(shape, ring with { SinkTokens = 4 }));
        Assert.Contains("sink tokens", e.Message);
        e = Assert.Throws<KvSpecException>(() => new PagedKvCache(shape, ring with { Policy = new KvPolicyConfig(new StreamingLlmPolicy(4), KvBudget.Parse("64")) }));
        Assert.Contains("token policy", e.Message);
        var cache = new PagedKvCache(shape, ring);
        using var seq = cache.CreateSequence();
        e = Assert.Throws<KvSpecException>(() => seq.Snapshot());
        Assert.Contains("rings", e.Message);
        Assert.Throws<KvSpecException>(() => seq.Fork());
        // A model without windows gets no rings.
        using var llama = GgufModelLoader.Load(SyntheticFixtures.Get("llama"));
        Assert.Null(new PagedKvCache(new Transformer(llama, Two, maxBatch: 4).KvShape, ring).RingPools);
    }
}
