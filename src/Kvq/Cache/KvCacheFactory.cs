namespace Kvq.Cache;

/// <summary>Builds a single-sequence cache from a spec string ("f16", "q4_0/f16", ...).</summary>
public static class KvCacheFactory
{
    public static PagedKvSequence CreateSequence(KvShape shape, string spec, int blockTokens = 32) =>
        new PagedKvCache(shape, KvCacheConfig.Parse(spec, blockTokens)).CreateSequence();
}
