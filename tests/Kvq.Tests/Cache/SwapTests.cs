using Kvq.Cache;
using Kvq.Cache.Paging;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache;

/// <summary>Swapping a sequence out to host memory and back changes nothing it computes.</summary>
public class SwapTests
{
    [Theory]
    [InlineData("f16", 0)]
    [InlineData("f16", 2)]
    [InlineData("q4_0/q8_0", 0)]
    [InlineData("kivi2", 0)]
    [InlineData("int4-ch/int8", 0)]
    [InlineData("nuq3-1%", 1)]   // sparse outlier rows beside blocks travel with them
    public void SwappedSequenceContinuesBitwiseLikeItsTwin(string spec, int sink)
    {
        var m = EngineFixtures.Books;
        var model = EngineFixtures.Model(m, 64);
        var config = KvCacheConfig.Parse(spec) with { SinkTokens = sink };
        if (spec.StartsWith("nuq")) config = config with { Profile = Codecs.KvQuant.KvQuantTestData.Profile(model.KvShape) };
        var cache = new PagedKvCache(model.KvShape, config, 64 * 32);
        int vocab = model.Config.VocabSize;
        var prompt = EngineFixtures.MobyPrompt(12345, 107);
        var twin = cache.CreateSequence();
        var swapped = cache.CreateSequence();
        var a = new float[vocab];
        var b = new float[vocab];
        model.Forward(prompt, twin, a);
        model.Forward(prompt, swapped, b);
        var blocksBefore = swapped.Blocks.ToArray();
        int held = cache.Sequences.Pool.HeldBlockCount;

        var host = swapped.SwapOut();
        Assert.Equal(held - blocksBefore.Length, cache.Sequences.Pool.HeldBlockCount);
        Assert.Equal(108, host.Length);
        // Another sequence takes blocks meanwhile, so the swapped one comes back in other blocks.
        using var other = cache.CreateSequence();
        model.Forward(EngineFixtures.MobyPrompt(500, 90), other, a);
        var back = PagedKvSequence.SwapIn(cache, host);
        Assert.Equal(108, back.Length);
        Assert.NotEqual(blocksBefore, back.Blocks.ToArray());

        int next = 1000;
        for (int step = 0; step < 40; step++)
        {
            model.Forward([next], twin, a);
            model.Forward([next], back, b);
            for (int i = 0; i < vocab; i++)
                Assert.True(BitConverter.SingleToInt32Bits(a[i]) == BitConverter.SingleToInt32Bits(b[i]),
                    $"{spec} sink {sink}, step {step}, logit {i}: twin {a[i]:R}, swapped {b[i]:R}");
            next = Array.IndexOf(a, a.Max());
        }
        twin.Dispose();
        back.Dispose();
    }

    [Fact]
    public void SwapInWithoutRoomChangesNothing()
    {
        var model = EngineFixtures.Model(EngineFixtures.Stories, 64);
        var cache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f32"), 4 * 32);
        var logits = new float[model.Config.VocabSize];
        var s = cache.CreateSequence();
        model.Forward(Enumerable.Range(1, 70).ToArray(), s, logits);
        var host = s.SwapOut();
        var filler = cache.CreateSequence();
        model.Forward(Enumerable.Range(1, 100).ToArray(), filler, logits);
        int free = cache.Sequences.Pool.FreeBlockCount;
        Assert.Throws<KvCacheFullException>(() => PagedKvSequence.SwapIn(cache, host));
        Assert.Equal(free, cache.Sequences.Pool.FreeBlockCount);
        Assert.Equal(1, cache.Sequences.Count);
    }
}
