using Kvq.Cache;
using Kvq.Cache.Paging;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Paging;

/// <summary>
/// <see cref="SlidingRings"/>' bookkeeping on its own (the model-driven <c>SlidingRingTests</c> check the logits and the
/// bound on held blocks; these check which block goes back when): against a plain model of each ring layer (logical
/// blocks allocated in order, the leading ones whose tokens no later query can see released), random reserves and
/// releases at odd block sizes and windows, a table that grows past its first 8 entries, a full pool, and the release of
/// everything. One sequence per cache, so a ring pool holds exactly what the rings say they hold.
/// </summary>
public class SlidingRingsTests(ITestOutputHelper output)
{
    private static PagedKvCache Cache(int[] windows, int blockTokens, bool ring = true, int maxTokens = 400)
    {
        var shape = new KvShape(windows.Length, 1, 1, 8, new Rope(8, 8, 10000f, 1f, RopeStyle.Normal)) { LayerWindows = windows };
        return new PagedKvCache(shape, KvCacheConfig.Parse("f32", blockTokens) with { SlidingRing = ring }, maxTokens);
    }

    [Theory]
    [InlineData(3, 7, 10)]
    [InlineData(5, 16, 5)]
    [InlineData(4, 4, 9)]
    public void ReservesAndReleasesFollowTheWindow(int blockTokens, int windowA, int windowB)
    {
        int seed = TestSeeds.Of(nameof(ReservesAndReleasesFollowTheWindow), blockTokens, windowA, windowB);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        int[] windows = [0, windowA, windowB];
        var cache = Cache(windows, blockTokens);
        var rings = SlidingRings.For(cache)!;
        Assert.False(rings.Has(0));
        Assert.True(rings.Has(1) && rings.Has(2));
        Assert.Null(cache.RingPools![0]);
        var ids = new List<int>[3];
        var released = new int[3];
        for (int l = 1; l < 3; l++) ids[l] = [];
        int length = 0, grownPast8 = 0;
        for (int step = 0; step < 60; step++)
        {
            // Append a chunk: reserve its slots in every ring layer, then commit (release what the window has passed).
            int chunk = rng.Next(1, 3 * blockTokens);
            int slots = length + chunk;
            foreach (int l in new[] { 1, 2 })
            {
                var pool = cache.RingPools![l]!;
                rings.Reserve(l, slots);
                int need = (slots + blockTokens - 1) / blockTokens;
                while (ids[l].Count < need) ids[l].Add(-2);   // allocated: the id is the ring's
                var got = rings.Blocks(l);
                Assert.Equal(ids[l].Count, got.Length);   // a table never shrinks (a short append reserved more)
                for (int b = 0; b < got.Length; b++)
                {
                    if (b < released[l]) Assert.Equal(-1, got[b]);
                    else
                    {
                        Assert.InRange(got[b], 0, pool.BlockCount - 1);
                        if (ids[l][b] == -2) ids[l][b] = got[b];
                        Assert.Equal(ids[l][b], got[b]);   // an allocated block keeps its id
                    }
                }
                Assert.Equal(ids[l].Count - released[l], rings.HeldBlocks(l));
                Assert.Equal(rings.HeldBlocks(l), pool.HeldBlockCount);
                var live = got[released[l]..].ToArray();
                Assert.Equal(live.Length, live.Distinct().Count());
                if (got.Length > 8) grownPast8++;
            }
            // Sometimes the append stops short (a rejected chunk): the length grows by less than was reserved.
            length += rng.Next(4) != 0 ? chunk : rng.Next(chunk);
            rings.Release(length);
            foreach (int l in new[] { 1, 2 })
            {
                int firstSeen = Math.Max(0, length + 1 - windows[l]);
                int upTo = Math.Min(ids[l].Count, firstSeen / blockTokens);
                released[l] = Math.Max(released[l], upTo);
                var got = rings.Blocks(l);
                for (int b = 0; b < got.Length; b++) Assert.Equal(b < released[l] ? -1 : ids[l][b], got[b]);
                Assert.Equal(ids[l].Count - released[l], rings.HeldBlocks(l));
                Assert.Equal(rings.HeldBlocks(l), cache.RingPools![l]!.HeldBlockCount);
                // A layer holds only what its window can see: at most ceil((W - 1) / B) + 1 blocks.
                if (ids[l].Count == (length + blockTokens - 1) / blockTokens)   // nothing reserved past the length
                    Assert.True(rings.HeldBlocks(l) <= (windows[l] - 1 + blockTokens - 1) / blockTokens + 1,
                    $"layer {l} holds {rings.HeldBlocks(l)} blocks at length {length}");
            }
            // Releasing again at the same length changes nothing.
            rings.Release(length);
            foreach (int l in new[] { 1, 2 }) Assert.Equal(ids[l].Count - released[l], rings.HeldBlocks(l));
        }
        Assert.True(grownPast8 > 0, "the block tables never grew past their first 8 entries");
        rings.ReleaseAll();
        foreach (int l in new[] { 1, 2 })
        {
            Assert.Equal(0, rings.HeldBlocks(l));
            Assert.Equal(0, rings.Blocks(l).Length);
            Assert.Equal(0, cache.RingPools![l]!.HeldBlockCount);
        }
        // The rings start again from block 0 after releasing everything.
        rings.Reserve(1, 2 * blockTokens + 1);
        Assert.Equal(3, rings.Blocks(1).Length);
        Assert.Equal(3, rings.HeldBlocks(1));
        Assert.DoesNotContain(-1, rings.Blocks(1).ToArray());
    }

    /// <summary>Reserving more blocks than a ring's pool has: the pool's typed error, and the blocks allocated before
    /// it stay counted (the next release gives them back).</summary>
    [Fact]
    public void AFullRingPoolRefusesWithTheCacheFullError()
    {
        var cache = Cache([6], 3, maxTokens: 30);
        var rings = SlidingRings.For(cache)!;
        var pool = cache.RingPools![0]!;
        int total = pool.BlockCount;
        Assert.Equal(10, total);
        rings.Reserve(0, total * 3);
        Assert.Equal(total, rings.HeldBlocks(0));
        Assert.Throws<KvCacheFullException>(() => rings.Reserve(0, total * 3 + 1));
        Assert.Equal(total, rings.HeldBlocks(0));
        rings.Release(total * 3);   // the window (6) sees the last 5 tokens: blocks ending before them go back
        int firstSeen = total * 3 + 1 - 6;
        Assert.Equal(total - firstSeen / 3, rings.HeldBlocks(0));
        Assert.Equal(rings.HeldBlocks(0), pool.HeldBlockCount);
        rings.ReleaseAll();
        Assert.Equal(0, pool.HeldBlockCount);
    }

    [Fact]
    public void NoRingsWithoutTheOptionOrAWindow()
    {
        Assert.Null(SlidingRings.For(Cache([0, 8], 4, ring: false)));
        Assert.Null(SlidingRings.For(Cache([0, 0], 4)));
    }
}
