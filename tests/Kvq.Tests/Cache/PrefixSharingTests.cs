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
