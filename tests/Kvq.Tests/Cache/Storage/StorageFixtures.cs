using Kvq.Cache;
using Kvq.Model;
using Kvq.Tests.Cache.Codecs.KvQuant;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache.Storage;

/// <summary>What the tier tests (host prefixes, prefix files, swap space) share: books-19m configs with one KVQuant
/// profile (fitted once for all of them) and the logits a prompt gets from a plain pool hit.</summary>
internal static class StorageFixtures
{
    private static readonly Lazy<Kvq.Cache.Codecs.IKvProfile> Profile =
        new(() => KvQuantTestData.Profile(EngineFixtures.Model(EngineFixtures.Books).KvShape, tokens: 600));

    /// <summary><paramref name="spec"/> with <paramref name="sink"/> sink tokens (and the profile for nuq formats).</summary>
    public static KvCacheConfig Config(string spec, int sink) =>
        KvCacheConfig.Parse(spec) with { SinkTokens = sink, Profile = spec.StartsWith("nuq", StringComparison.Ordinal) ? Profile.Value : null };

    /// <summary>The logits after <paramref name="prompt"/> for a second sequence that finds all of its
    /// <paramref name="cachedTokens"/> whole-block tokens in a large pool (the reference a tier's hit must equal).</summary>
    public static float[] PoolHitLogits(Transformer model, KvCacheConfig config, int[] prompt, int cachedTokens)
    {
        var large = new PagedKvCache(model.KvShape, config);
        var logits = new float[model.Config.VocabSize];
        using (var first = large.CreateSequence(prompt)) model.Forward(prompt, first, logits);
        using var again = large.CreateSequence(prompt);
        Assert.Equal(cachedTokens, again.Length);
        model.Forward(prompt.AsSpan(again.Length), again, logits);
        return logits;
    }
}
