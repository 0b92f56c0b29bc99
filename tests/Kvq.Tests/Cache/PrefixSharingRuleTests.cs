using Kvq.Cache;
using Kvq.Cache.Offload;
using Kvq.Cache.Policies;
using Kvq.Model;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache;

/// <summary>
/// Prefix sharing with lossy per-token codecs (reused blocks read back exactly what a fresh run stores, so the logits
/// agree to float noise), and the rule that turns block sharing off: a token policy (each layer keeps its own blocks;
/// its prefixes are shared as policy states only when asked, PolicyPrefixSharingTests) or offload (per-sequence block
/// summaries) never reuses a cached prefix, and a fork is refused while a codec keeps recent tokens in staging.
/// </summary>
public class PrefixSharingRuleTests(ITestOutputHelper output)
{
    private const int Block = 16;

    private static (int[] A, int[] B) Prompts(int shared, int tailA, int tailB)
    {
        var moby = SharedModels.MobyDickTokens;
        var common = moby.AsSpan(12000, shared).ToArray();
        return ([1, .. common, .. moby.AsSpan(60000, tailA)], [1, .. common, .. moby.AsSpan(70000, tailB)]);
    }

    private static double RelL2(float[] expected, float[] actual)
    {
        double diff = 0, norm = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            diff += (expected[i] - actual[i]) * (double)(expected[i] - actual[i]);
            norm += expected[i] * (double)expected[i];
        }
        return Math.Sqrt(diff / norm);
    }

    /// <summary>Lossy per-token codecs encode each token on its own: the blocks a second prompt reuses hold the codes a
    /// fresh run of that prompt would write, so its logits equal the fresh run's (to the order of float sums).</summary>
    [Theory]
    [InlineData("q4_0")]
    [InlineData("int2")]
    [InlineData("int4:rot")]
    [InlineData("tq3")]
    [InlineData("q8_0/int4-tok")]
    public void LossyPerTokenCodecsReuseThePrefixAndGiveTheFreshRunsLogits(string spec)
    {
        var model = new Transformer(SharedModels.Books, new Parallelism(2));
        int vocab = model.Config.VocabSize;
        var (promptA, promptB) = Prompts(shared: 90, tailA: 5, tailB: 7);
        var config = KvCacheConfig.Parse(spec, Block);
        var cache = new PagedKvCache(model.KvShape, config);
        Assert.True(cache.SupportsPrefixSharing);
        var logits = new float[vocab];
        using (var a = cache.CreateSequence(promptA)) model.Forward(promptA, a, logits);
        using var b = cache.CreateSequence(promptB);
        Assert.Equal(91 / Block * Block, b.Length); // every full block of BOS + the shared 90 tokens
        model.Forward(promptB.AsSpan(b.Length), b, logits);

        var expected = new float[vocab];
        model.Forward(promptB, new PagedKvCache(model.KvShape, config).CreateSequence(), expected);
        // Control: the codec is lossy at this size, so equality with the fresh run is not equality with f32.
        var exact = new float[vocab];
        model.Forward(promptB, new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f32", Block)).CreateSequence(), exact);
        double reuse = RelL2(expected, logits), lossy = RelL2(exact, expected);
        output.WriteLine($"{spec}: reused {b.Length} tokens; relative L2 vs fresh run {reuse:E2}, fresh run vs f32 {lossy:E2}");
        Assert.True(reuse <= 1e-4, $"{spec}: relative L2 {reuse:E2} vs the fresh run");
        Assert.True(lossy > 1e-3, $"{spec}: the codec looks lossless here ({lossy:E2}), so the test shows nothing");
    }

    /// <summary>A token policy (without <see cref="PagedKvCache.SharePolicyPrefixes"/>: PolicyPrefixSharingTests) or offload
    /// turns block sharing off: the same prompt again starts from zero (while the plain
    /// cache of the same format reuses it), and the second run computes what the first did.</summary>
    [Theory]
    [InlineData("policy")]
    [InlineData("offload")]
    public void PolicyAndOffloadCachesNeverReuseAPrefix(string rule)
    {
        var model = new Transformer(SharedModels.Books, new Parallelism(2));
        int vocab = model.Config.VocabSize;
        var (prompt, _) = Prompts(shared: 70, tailA: 3, tailB: 0);
        var plain = KvCacheConfig.Parse("q8_0", Block);
        var config = rule == "policy"
            ? plain with { Policy = new KvPolicyConfig(KvPolicyRegistry.Parse("h2o"), KvBudget.Parse("0.5")) }
            : plain with { Offload = KvOffloadBudget.Parse("50%") };

        var control = new PagedKvCache(model.KvShape, plain);
        var logits = new float[vocab];
        using (var s = control.CreateSequence(prompt)) model.Forward(prompt, s, logits);
        using (var s = control.CreateSequence(prompt)) Assert.Equal(prompt.Length / Block * Block, s.Length);

        var cache = new PagedKvCache(model.KvShape, config);
        Assert.False(cache.SupportsPrefixSharing);
        var first = new float[vocab];
        using (var s = cache.CreateSequence(prompt)) model.Forward(prompt, s, first);
        using var again = cache.CreateSequence(prompt);
        Assert.Equal(0, again.Length);
        var second = new float[vocab];
        model.Forward(prompt, again, second);
        Assert.Equal(first, second);
    }

    /// <summary>Forking: refused (typed error naming the format) while a codec stages recent tokens; allowed for a
    /// per-token lossy codec (and under a token policy: PolicyPrefixSharingTests), where the fork continues exactly as the parent would.</summary>
    [Fact]
    public void ForkIsRefusedForStagingAndExactOtherwise()
    {
        var model = new Transformer(SharedModels.Books, new Parallelism(2));
        int vocab = model.Config.VocabSize;
        var (prompt, _) = Prompts(shared: 40, tailA: 3, tailB: 0); // 44 tokens: the last block is partial
        var logits = new float[vocab];

        var kivi = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("kivi2"));
        using (var s = kivi.CreateSequence())
        {
            model.Forward(prompt, s, logits);
            var e = Assert.Throws<KvSpecException>(() => s.Fork());
            Assert.Contains("kivi2", e.Message);
            Assert.Contains("staging", e.Message);
        }
        var cache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("q4_0", Block));
        using var parent = cache.CreateSequence();
        model.Forward(prompt, parent, logits);
        using var child = parent.Fork();
        Assert.Equal(prompt.Length, child.Length);
        int[] next = [.. SharedModels.MobyDickTokens.AsSpan(80000, 5)];
        var fromChild = new float[vocab];
        model.Forward(next, child, fromChild);   // copy-on-write of the partial block: the parent keeps its own
        var fromParent = new float[vocab];
        model.Forward(next, parent, fromParent);
        Assert.Equal(fromParent, fromChild);
        var fresh = new float[vocab];
        model.Forward([.. prompt, .. next], new PagedKvCache(model.KvShape, KvCacheConfig.Parse("q4_0", Block)).CreateSequence(), fresh);
        Assert.True(RelL2(fresh, fromChild) <= 1e-4, $"fork vs fresh run: relative L2 {RelL2(fresh, fromChild):E2}");
    }
}
