using Kvq.Cache;
using Kvq.Cache.Attention;
using Kvq.Cache.Storage;
using Kvq.Tensors;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Attention;

/// <summary>
/// Attention's prefetch of the next blocks' sparse outlier rows (<see cref="BlockAttention.PrefetchOutlierRows"/>) only
/// asks for cache lines: decode attention over a KVQuant cache must give the same bits with it on and off, and the
/// read-only lookup it uses (<see cref="BlockArena.PeekOutliers"/>) must never create rows. (The switch is static; a
/// test running beside this one sees only a prefetch more or less, never other numbers.)
/// </summary>
public class OutlierPrefetchTests
{
    [Theory]
    [InlineData("nuq4-1%", 0, 203, 1)]
    [InlineData("nuq3-1%", 1, 331, 1)]
    [InlineData("nuq4-1%", 1, 97, 2)]
    [InlineData("nuq3-1%:token", 0, 161, 1)]
    public void DecodeAttentionIsTheSameWithAndWithoutThePrefetch(string spec, int sink, int tokens, int threads)
    {
        const int layers = 2, kvHeads = 2, headDim = 64;
        var shape = KvQuantTestData.Shape(layers, kvHeads, headDim, groupSize: 3);
        var cfg = KvCacheConfig.Parse(spec) with { Profile = KvQuantTestData.Profile(shape, tokens: 1500), SinkTokens = sink };
        var cache = new PagedKvCache(shape, cfg);
        using var seq = cache.CreateSequence();
        var k = KvQuantTestData.Activations(tokens, shape.KvDim, TestSeeds.Of(spec, tokens) + 1);
        var v = KvQuantTestData.Activations(tokens, shape.KvDim, TestSeeds.Of(spec, tokens) + 2);
        seq.BeginChunk(new int[tokens]);
        for (int l = 0; l < layers; l++) seq.Append(l, k, v, tokens);
        seq.Commit(tokens);
        Assert.True(cache.Keys[1].OutlierBytes > 0, "the cache holds no outlier rows: nothing to prefetch");
        var q = KvQuantTestData.Activations(1, shape.QDim, TestSeeds.Of(spec, tokens) + 3);
        var par = new Parallelism(threads);
        var with = new float[shape.QDim];
        var without = new float[shape.QDim];
        try
        {
            for (int l = 0; l < layers; l++)
            {
                BlockAttention.PrefetchOutlierRows = true;
                seq.Attend(l, q, 1, with, par);
                BlockAttention.PrefetchOutlierRows = false;
                seq.Attend(l, q, 1, without, par);
                Assert.Equal(without, with);
                Assert.All(with, x => Assert.True(float.IsFinite(x)));
            }
        }
        finally
        {
            BlockAttention.PrefetchOutlierRows = true;
        }
    }

    [Fact]
    public void PeekNeverCreatesRows()
    {
        var arena = new BlockArena(kvHeads: 3, blockBytes: 40, capacityBlocks: 200, outliers: true);
        Assert.Null(arena.PeekOutliers(130, 2));   // chunk 2 not there yet
        var rows = arena.Outliers(130, 2);
        Assert.Same(rows, arena.PeekOutliers(130, 2));
        Assert.Null(arena.PeekOutliers(130, 1));   // same chunk, another head: not created by the lookup
        Assert.Null(arena.PeekOutliers(5, 0));
        Assert.Null(arena.PeekOutliers(199, 0));
        Assert.Null(arena.PeekOutliers(200, 0));   // past the capacity: nothing, no exception
        Assert.Null(arena.PeekOutliers(-1, 0));
        Assert.Null(new BlockArena(kvHeads: 1, blockBytes: 40, capacityBlocks: 10).PeekOutliers(0, 0));   // a format without rows
        Assert.NotNull(arena.Outliers(5, 0));
        Assert.Null(arena.PeekOutliers(130, 0));
    }
}
