using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;
using Kvq.Eval;
using Kvq.Tensors;
using Kvq.Tests.Cache.Codecs;
using Kvq.Tests.Cache.Codecs.KvQuant;
using Kvq.Tests.Cache.Codecs.LowRank;

namespace Kvq.Tests.Cache.Layout;

/// <summary>The plan's bytes against what a cache built from the same spec allocates and reports, for every registered
/// format at several shapes, sink counts and lengths (partial blocks included).</summary>
public sealed class KvLayoutPlanTests
{
    private static readonly KvShape ProfileShape = KvQuantTestData.Shape(3, 2, 16);
    /// <summary>Calibrated for <see cref="ProfileShape"/>: KVQuant codebooks with sensitivities (:mixed) and low-rank bases.</summary>
    private static readonly Lazy<KvQuantProfile> Profile = new(() => LowRankTestData.Profile(ProfileShape, tokens: 600, latentRanks: [8]));

    private static KvShape Shape(int layers, int kvHeads, int heads, int headDim) =>
        new(layers, kvHeads, heads, headDim, new Rope(headDim, headDim, 10000f, 1f, RopeStyle.Normal));

    public static IEnumerable<object[]> Names() => CodecTestData.Names();

    [Theory]
    [MemberData(nameof(Names))]
    public void BytesMatchTheCache(string name)
    {
        int built = 0;
        foreach (int sink in new[] { 0, 1, 4 })
        {
            // GQA groups of 2, head dim 64, KIVI's 32-token blocks.
            built += Check(Shape(2, 2, 4, 64), new KvCacheConfig(name, name, 32, sink), [1, 31, 33, 200]);
            // The calibrated shape (groups of 3) with a profile: every calibrated format builds here.
            built += Check(ProfileShape, new KvCacheConfig(name, name, 32, sink, Profile.Value), [5, 64, 161]);
        }
        // An odd head dim, blocks of 16, groups of 3: formats that need multiples of 32 (or KIVI's blocks) refuse it.
        built += Check(Shape(1, 1, 3, 24), new KvCacheConfig(name, name, 16), [1, 17, 50]);
        Assert.True(built > 0, $"{name}: no shape built a cache");
    }

    [Theory]
    [InlineData("nuq3-1%:mixed")]
    [InlineData("nuq2:mixed")]
    [InlineData("nuq3-1%:mixed/nuq4")]
    [InlineData("kivi2/int4")]
    [InlineData("int4-ch/f16")]
    [InlineData("lr8+nuq3-1%/f16")]
    public void MixedAndSplitSpecsMatchTheCache(string spec)
    {
        foreach (int sink in new[] { 0, 1, 4 })
            Assert.Equal(1, Check(ProfileShape, KvCacheConfig.Parse(spec) with { SinkTokens = sink, Profile = Profile.Value }, [3, 32, 100, 170]));
    }

    [Fact]
    public void MixedWidthsAreChosenOnceInThePlanAsEachCodecWouldAlone()
    {
        var config = KvCacheConfig.Parse("nuq3-1%:mixed") with { Profile = Profile.Value };
        var plan = KvLayoutPlan.Build(ProfileShape, config);
        foreach (var side in new[] { plan.Keys, plan.Values })
            for (int l = 0; l < ProfileShape.Layers; l++)
            {
                var spec = Assert.IsType<KvQuantSpec>(side.LayerSpecs[l]);
                Assert.True(spec.Allocated);
                var alone = config.CreateCodec(side.Side, l, 0, ProfileShape.HeadDim);
                Assert.Equal(alone.BlockLayout, side.BlockLayout(l));
                Assert.Equal(spec.Bits, alone is NuqChannelCodec k ? k.Codebook.Bits : ((NuqTokenCodec)alone).Codebook.Bits);
            }
        Assert.Equal(3 * ProfileShape.Layers, Enumerable.Range(0, ProfileShape.Layers).Sum(l => ((KvQuantSpec)plan.Keys.LayerSpecs[l]).Bits));
    }

    [Fact]
    public void TheTableParsesToTypedSpecs()
    {
        Assert.IsType<KvQuantSpec>(KvCodecRegistry.Parse("nuq3-0.5%:post"));
        Assert.IsType<Kvq.Cache.Codecs.LowRank.LowRankSpec>(KvCodecRegistry.Parse("lr32+f16"));
        Assert.Equal("int4-ch", KvCodecRegistry.Parse("int4-ch").Name);
        Assert.Contains("unknown KV format 'int5'", Assert.Throws<KvSpecException>(() => KvCodecRegistry.Parse("int5")).Message);
        Assert.Contains("bits 2..4", Assert.Throws<KvSpecException>(() => KvCodecRegistry.Parse("nuq5")).Message);
        Assert.All(KvCodecRegistry.Table, row => Assert.Equal(row.Name, KvCodecRegistry.Parse(row.Name).Name));
    }

    /// <summary>Builds the plan and, for each length, a cache of exactly that capacity filled through IKvSequence;
    /// returns 1 when the spec fits the shape (0 when both the plan and the cache refuse it).</summary>
    private static int Check(KvShape shape, KvCacheConfig config, int[] lengths)
    {
        KvLayoutPlan plan;
        try
        {
            plan = KvLayoutPlan.Build(shape, config);
        }
        catch (KvSpecException e)
        {
            var c = Assert.Throws<KvSpecException>(() => new PagedKvCache(shape, config));
            Assert.Equal(e.Message, c.Message);
            return 0;
        }
        long sinkCopies = 2L * 2 * shape.Layers * shape.KvHeads * shape.HeadDim * config.SinkTokens;   // keys + values, f16
        foreach (int n in lengths)
        {
            var cache = new PagedKvCache(shape, config, maxTokens: n);
            Assert.Equal(plan.BytesPerBlock, cache.BytesPerBlock);
            Assert.Equal(64 * sinkCopies, cache.SinkBankBytes);
            Assert.Equal(cache.SinkBankBytes, plan.SinkBankBytes);
            using var seq = cache.CreateSequence();
            Assert.Equal(plan.BytesPerSequence, seq.Memory().StagingBytes);
            KvMemoryEvaluator.Fill(seq, shape, n, seed: n);
            var mem = seq.Memory();
            var want = plan.MemoryAt(n);
            // Sparse outlier rows beside blocks (KVQuant) are counted as held, on top of the plan's fixed block bytes.
            long keyRows = 0, valueRows = 0;
            for (int l = 0; l < shape.Layers; l++)
            {
                keyRows += cache.Keys[l].OutlierBytes;
                valueRows += cache.Values[l].OutlierBytes;
            }
            Assert.Equal(plan.Keys.Codec.HasBlockOutliers, keyRows > 0);
            Assert.Equal(plan.Values.Codec.HasBlockOutliers, valueRows > 0);
            Assert.Equal(want.Keys + new KvBytes(0, 0, 0, keyRows, 0, 0), mem.Keys);
            Assert.Equal(want.Values + new KvBytes(0, 0, 0, valueRows, 0, 0), mem.Values);
            Assert.Equal(want.StagingBytes, mem.StagingBytes);
            Assert.Equal(want.TotalBytes + keyRows + valueRows, mem.TotalBytes);
            Assert.Equal(cache.HeldBytes, mem.Keys.Total + mem.Values.Total);
            if (keyRows + valueRows == 0) Assert.Equal(want.BitsPerElement, mem.BitsPerElement);
            // The plan expects sparse rows exactly where the cache keeps them (their bytes depend on the data).
            var expect = plan.MemoryAt(n, expectedOutliers: true);
            long expectedRows = (expect.Keys + expect.Values).Outliers;
            Assert.Equal(keyRows + valueRows > 0, expectedRows > 0);
            // Arenas of exactly n tokens' blocks hold them all once a block is written (a staging format writes its
            // first block when one block and the residual window are staged), plus the sparse rows.
            for (int l = 0; l < shape.Layers; l++)
            {
                var (k, v) = plan.LayerBlockBytes(l, plan.BlocksFor(n));
                Assert.Equal(Written(plan.Keys, n) ? k.Total : 0, cache.Keys[l].AllocatedBytes - cache.Keys[l].OutlierBytes);
                Assert.Equal(Written(plan.Values, n) ? v.Total : 0, cache.Values[l].AllocatedBytes - cache.Values[l].OutlierBytes);
            }
        }
        return 1;
    }

    private static bool Written(KvSidePlan side, int tokens) => !side.EncodesWholeBlocks || tokens >= side.StagingTokens;
}
