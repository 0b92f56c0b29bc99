using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

public class PrefixIndexTests
{
    private const int B = 3;

    /// <summary>Allocates one block per full block of tokens and registers its chained hash, as a sequence would.</summary>
    private static int[] Fill(BlockPool pool, int[] tokens)
    {
        var ids = new int[tokens.Length / B];
        var parent = BlockHash.Root;
        for (int i = 0; i < ids.Length; i++)
        {
            ids[i] = pool.Allocate();
            parent = BlockHash.Of(parent, tokens.AsSpan(i * B, B));
            Assert.True(pool.Prefixes.TryRegister(ids[i], parent));
        }
        return ids;
    }

    [Fact]
    public void AcquirePrefix_ReturnsLongestRun_AndTakesReferences()
    {
        var pool = new BlockPool(8, B);
        int[] doc = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
        int[] ids = Fill(pool, doc);                  // 3 full blocks, token 10 not in a full block
        int[] prompt = { 1, 2, 3, 4, 5, 6, 0, 8, 9, 10, 11 };
        var hit = new int[4];
        var hashes = new BlockHash[4];
        int n = pool.Prefixes.AcquirePrefix(prompt, hit, hashes);
        Assert.Equal(2, n);
        Assert.Equal(ids[..2], hit[..2]);
        Assert.Equal(BlockHash.Of(BlockHash.Of(BlockHash.Root, doc.AsSpan(0, 3)), doc.AsSpan(3, 3)), hashes[1]);
        Assert.Equal(new[] { 2, 2, 1 }, new[] { pool.RefCount(ids[0]), pool.RefCount(ids[1]), pool.RefCount(ids[2]) });
    }

    [Fact]
    public void SameBlockTokens_AfterDifferentPrefix_DoNotHit()
    {
        var pool = new BlockPool(8, B);
        Fill(pool, new[] { 1, 2, 3, 4, 5, 6 });
        Assert.Equal(0, pool.Prefixes.CountCachedBlocks(new[] { 4, 5, 6 }));
        Assert.Equal(1, pool.Prefixes.CountCachedBlocks(new[] { 1, 2, 3, 9, 5, 6 }));
        Assert.Equal(2, pool.Prefixes.CountCachedBlocks(new[] { 1, 2, 3, 4, 5, 6, 7 }));
        Assert.Equal(1, pool.Prefixes.CountCachedBlocks(new[] { 1, 2, 3, 4, 5 })); // second block not full in prompt
    }

    [Fact]
    public void AcquirePrefix_IsCappedBySpanLength_AndCountTakesNothing()
    {
        var pool = new BlockPool(8, B);
        int[] doc = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
        int[] ids = Fill(pool, doc);
        Assert.Equal(3, pool.Prefixes.CountCachedBlocks(doc));
        Assert.Equal(1, pool.RefCount(ids[2]));
        var hit = new int[3];
        Assert.Equal(2, pool.Prefixes.AcquirePrefix(doc, hit, new BlockHash[2]));
        Assert.Equal(1, pool.RefCount(ids[2]));
    }

    [Fact]
    public void CachedFreeBlocks_AreRevived_UntilEvicted()
    {
        var pool = new BlockPool(2, B);
        int[] doc = { 1, 2, 3, 4, 5, 6 };
        int[] ids = Fill(pool, doc);
        pool.Release(ids[1]);
        pool.Release(ids[0]);
        Assert.Equal(2, pool.CachedFreeBlockCount);
        var hit = new int[2];
        Assert.Equal(2, pool.Prefixes.AcquirePrefix(doc, hit, new BlockHash[2]));
        Assert.Equal(0, pool.FreeBlockCount);
        pool.Release(ids[1]);
        pool.Release(ids[0]);
        pool.Allocate(); // evicts ids[1], released first
        Assert.Equal(1, pool.Prefixes.CountCachedBlocks(doc));
        pool.Allocate();
        Assert.Equal(0, pool.Prefixes.CountCachedBlocks(doc));
        Assert.Equal(0, pool.Prefixes.Count);
    }

    [Fact]
    public void Register_RejectsDuplicates_FreeBlocks_AndReregistration()
    {
        var pool = new BlockPool(4, B);
        var h = BlockHash.Of(BlockHash.Root, new[] { 1, 2, 3 });
        int a = pool.Allocate(), b = pool.Allocate();
        Assert.True(pool.Prefixes.TryRegister(a, h));
        Assert.False(pool.Prefixes.TryRegister(b, h)); // same content elsewhere: b stays plain
        Assert.False(pool.Prefixes.IsRegistered(b));
        Assert.True(pool.Prefixes.TryGetBlock(h, out int found) && found == a);
        Assert.True(pool.Prefixes.TryGetHash(a, out var got) && got == h);
        Assert.Throws<InvalidOperationException>(() => pool.Prefixes.TryRegister(a, BlockHash.Of(h, new[] { 4, 5, 6 })));
        Assert.Throws<InvalidOperationException>(() => pool.Prefixes.TryRegister(3, BlockHash.Of(h, new[] { 7, 8, 9 })));
        pool.Release(b);
        Assert.Equal(new[] { b, 2, 3 }, BlockPoolTests.FreeList(pool)); // unregistered: reused first, not cached
    }
}
