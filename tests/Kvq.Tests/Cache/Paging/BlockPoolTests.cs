using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

public class BlockPoolTests
{
    private static BlockHash H(int i) => BlockHash.Of(BlockHash.Root, new[] { i });

    internal static int[] FreeList(BlockPool pool)
    {
        var ids = new int[pool.BlockCount];
        return ids.AsSpan(0, pool.CopyFreeList(ids)).ToArray();
    }

    [Fact]
    public void FreshPool_HandsOutAscendingIds_ThenThrowsWithCounts()
    {
        var pool = new BlockPool(3, 16);
        Assert.Equal(new[] { 0, 1, 2 }, new[] { pool.Allocate(), pool.Allocate(), pool.Allocate() });
        var ex = Assert.Throws<KvCacheFullException>(() => pool.Allocate());
        Assert.Equal(1, ex.RequestedBlocks);
        Assert.Equal(0, ex.AvailableBlocks);
        Assert.Equal(3, ex.TotalBlocks);
        Assert.Equal(16, ex.TokensPerBlock);
        Assert.Contains("needed 1 block(s), 0 of 3 available", ex.Message);
    }

    [Fact]
    public void AllocateMany_IsAllOrNothing()
    {
        var pool = new BlockPool(4, 3);
        pool.Allocate();
        var ids = new int[4];
        var ex = Assert.Throws<KvCacheFullException>(() => pool.Allocate(ids));
        Assert.Equal((4, 3), (ex.RequestedBlocks, ex.AvailableBlocks));
        Assert.Equal(3, pool.FreeBlockCount);
        pool.Allocate(ids.AsSpan(0, 3));
        Assert.Equal(new[] { 1, 2, 3 }, ids[..3]);
        Assert.Equal(0, pool.FreeBlockCount);
    }

    [Fact]
    public void RefCountsAndCounters_FollowAddRefAndRelease()
    {
        var pool = new BlockPool(4, 1);
        int a = pool.Allocate();
        pool.AddRef(a);
        pool.AddRef(a);
        Assert.Equal(3, pool.RefCount(a));
        Assert.Equal(new PoolBlockUsage(4, 1, 1, 3, 0, 3), pool.Usage);
        pool.Release(a);
        pool.Release(a);
        Assert.Equal(new PoolBlockUsage(4, 1, 0, 1, 0, 3), pool.Usage);
        pool.Release(a);
        Assert.True(pool.IsFree(a));
        Assert.Equal(new PoolBlockUsage(4, 0, 0, 0, 0, 4), pool.Usage);
    }

    [Fact]
    public void Misuse_Throws()
    {
        var pool = new BlockPool(2, 4);
        Assert.Throws<InvalidOperationException>(() => pool.Release(0));
        Assert.Throws<InvalidOperationException>(() => pool.AddRef(1)); // free, nothing cached: stale data
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.RefCount(2));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Release(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BlockPool(0, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BlockPool(4, 0));
    }

    [Fact]
    public void PlainFreedBlocks_AreReusedBeforeCachedOnes()
    {
        var pool = new BlockPool(4, 2);
        int a = pool.Allocate(), b = pool.Allocate(), c = pool.Allocate();
        Assert.True(pool.Prefixes.TryRegister(a, H(1)));
        pool.Release(a); // cached: goes to the back
        pool.Release(b); // plain: goes to the front
        Assert.Equal(new[] { b, 3, a }, FreeList(pool));
        Assert.Equal(1, pool.CachedFreeBlockCount);
        Assert.Equal(b, pool.Allocate());
        Assert.Equal(3, pool.Allocate());
        Assert.True(pool.Prefixes.IsRegistered(a));
        Assert.Equal(0, pool.EvictionCount);
        Assert.Equal(a, pool.Allocate()); // nothing plain left: evict
        Assert.False(pool.Prefixes.IsRegistered(a));
        Assert.False(pool.Prefixes.TryGetBlock(H(1), out _));
        Assert.Equal(1, pool.EvictionCount);
        Assert.Equal(0, pool.CachedFreeBlockCount);
        pool.Release(c);
    }

    [Fact]
    public void CachedBlocks_AreEvictedLeastRecentlyReleasedFirst()
    {
        var pool = new BlockPool(4, 2);
        var ids = new int[4];
        pool.Allocate(ids);
        for (int i = 0; i < 4; i++) Assert.True(pool.Prefixes.TryRegister(ids[i], H(i)));
        int[] releaseOrder = { 2, 0, 3, 1 };
        foreach (int i in releaseOrder) pool.Release(ids[i]);
        Assert.Equal(releaseOrder, FreeList(pool));
        // Revive block 0 (a prefix hit), release it again: it becomes the most recently used.
        pool.AddRef(0);
        Assert.Equal(new[] { 2, 3, 1 }, FreeList(pool));
        pool.Release(0);
        Assert.Equal(new[] { 2, 3, 1, 0 }, new[] { pool.Allocate(), pool.Allocate(), pool.Allocate(), pool.Allocate() });
        Assert.Equal(4, pool.EvictionCount);
        Assert.Equal(0, pool.Prefixes.Count);
    }

    [Fact]
    public void RevivingCachedBlock_RemovesItFromFreeList()
    {
        var pool = new BlockPool(3, 5);
        int a = pool.Allocate();
        pool.Prefixes.TryRegister(a, H(7));
        pool.Release(a);
        Assert.Equal(3, pool.FreeBlockCount);
        pool.AddRef(a);
        Assert.Equal(1, pool.RefCount(a));
        Assert.Equal(2, pool.FreeBlockCount);
        Assert.DoesNotContain(a, FreeList(pool));
        Assert.Equal(0, pool.CachedFreeBlockCount);
        Assert.True(pool.Prefixes.IsRegistered(a)); // still findable while held
    }
}
