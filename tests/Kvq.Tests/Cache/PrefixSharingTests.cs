using Kvq.Cache;
using Kvq.Model;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache;

/// <summary>Two sequences that share a long prompt hold it once, and compute what separate runs compute.</summary>
public class PrefixSharingTests(ITestOutputHelper output)
{
    [Fact]
    public void SharedPromptIsHeldOnceAndOutputsEqualSeparateRuns()
    {
        var model = new Transformer(SharedModels.Books, new Parallelism(2));
        int vocab = model.Config.VocabSize;
        var moby = SharedModels.MobyDickTokens;
        var shared = moby.AsSpan(5000, 2000).ToArray();
        int[] promptA = [1, .. shared, .. moby.AsSpan(20000, 37)];
        int[] promptB = [1, .. shared, .. moby.AsSpan(30000, 41)];

        var cache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16"));
        var logitsA = new float[vocab];
        var logitsB = new float[vocab];
        using var a = cache.CreateSequence(promptA);
        Assert.Equal(0, a.Length);
        model.Forward(promptA.AsSpan(a.Length), a, logitsA);
        using var b = cache.CreateSequence(promptB);
        int reused = b.Length;
        Assert.Equal((2001 / 32) * 32, reused); // every full block of the shared part (BOS + 2000 tokens)
        model.Forward(promptB.AsSpan(reused), b, logitsB);

        long separate = a.Memory().TotalBytes + b.Memory().TotalBytes;
        long held = cache.HeldBytes;
        output.WriteLine($"reused {reused} tokens; held {held:N0} bytes vs {separate:N0} for two separate caches; " +
                         $"shared blocks {b.BlockUsage.SharedBlocks}");
        Assert.Equal(separate - (long)b.BlockUsage.SharedBlocks * cache.BytesPerBlock, held);
        Assert.True(held < separate * 0.55, $"held {held} vs separate {separate}");

        // Separate runs on fresh caches give the same logits.
        foreach (var (prompt, got) in new[] { (promptA, logitsA), (promptB, logitsB) })
        {
            var fresh = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16")).CreateSequence();
            var expected = new float[vocab];
            model.Forward(prompt, fresh, expected);
            for (int i = 0; i < vocab; i++)
                Assert.True(Math.Abs(expected[i] - got[i]) <= 1e-4f * (1 + Math.Abs(expected[i])), $"logit {i}: {expected[i]} vs {got[i]}");
        }
    }
}

/// <summary>Prefix sharing with formats that keep data outside blocks: staging formats (blocks shared once sealed)
/// and sink tokens (their exact copies banked beside the first block). A reused prefix is read as it is stored: with
/// KIVI's f16 window of recent tokens, a sequence that reuses sealed blocks reads quantized some tokens that a run
/// of its own would still hold in f16, so its logits differ from a fresh run by the codec's noise, not more.</summary>
public class PrefixSharingFormatTests
{
    [Theory]
    [InlineData("kivi2", 0, 1376, 2e-2)]      // KIVI keeps the last 128 tokens staged: blocks sealed up to 1504 - 128, in 32s
    [InlineData("int4-ch/f16", 0, 1472, 1e-4)] // per-channel keys encode whole blocks (no residual window)
    [InlineData("f16", 4, 1472, 1e-4)]
    [InlineData("q8_0", 1, 1472, 1e-4)]
    [InlineData("nuq3-1%", 1, 1472, 1e-4)]   // cached blocks keep their sparse outlier rows (KVQuant)
    public void SharedPromptIsReusedAndGivesTheFreshRunsLogits(string spec, int sink, int expectedReuse, double relL2)
    {
        var model = new Transformer(SharedModels.Books, new Parallelism(2));
        int vocab = model.Config.VocabSize;
        var moby = SharedModels.MobyDickTokens;
        var shared = moby.AsSpan(9000, 1500).ToArray();
        int[] promptA = [1, .. shared, .. moby.AsSpan(40000, 3)];
        int[] promptB = [1, .. shared, .. moby.AsSpan(50000, 29)];
        var config = KvCacheConfig.Parse(spec) with { SinkTokens = sink };
        if (spec.StartsWith("nuq")) config = config with { Profile = Codecs.KvQuant.KvQuantTestData.Profile(model.KvShape) };
        var cache = new PagedKvCache(model.KvShape, config);
        var logits = new float[vocab];
        using (var a = cache.CreateSequence(promptA)) model.Forward(promptA, a, logits);
        using var b = cache.CreateSequence(promptB);
        Assert.Equal(expectedReuse, b.Length);
        model.Forward(promptB.AsSpan(b.Length), b, logits);
        var fresh = new PagedKvCache(model.KvShape, config).CreateSequence();
        var expected = new float[vocab];
        model.Forward(promptB, fresh, expected);
        double diff = 0, norm = 0;
        for (int i = 0; i < vocab; i++)
        {
            diff += (expected[i] - logits[i]) * (double)(expected[i] - logits[i]);
            norm += expected[i] * (double)expected[i];
        }
        Assert.True(Math.Sqrt(diff / norm) <= relL2, $"{spec}: relative L2 {Math.Sqrt(diff / norm):E2} > {relL2:E0}");
        Assert.Equal(Array.IndexOf(expected, expected.Max()), Array.IndexOf(logits, logits.Max()));
    }

    [Fact]
    public void ABankAtCapacityUnregistersTheOldestPrefix()
    {
        var model = new Transformer(SharedModels.Books, new Parallelism(2));
        var config = KvCacheConfig.Parse("f16") with { SinkTokens = 2 };
        var cache = new PagedKvCache(model.KvShape, config, sinkBankEntries: 2);
        var logits = new float[model.Config.VocabSize];
        var moby = SharedModels.MobyDickTokens;
        int[][] prompts = [.. Enumerable.Range(0, 3).Select(i => (int[])[1, .. moby.AsSpan(1000 * (i + 1), 70)])];
        foreach (var p in prompts)
            using (var s = cache.CreateSequence(p)) model.Forward(p, s, logits);
        // Three first blocks banked into two entries: the first prompt's prefix is no longer reusable.
        Assert.Equal(0, cache.CreateSequence(prompts[0]).Length);
        Assert.Equal(64, cache.CreateSequence(prompts[2]).Length);
    }
}
