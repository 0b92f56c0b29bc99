using System.Buffers.Binary;
using System.Security.Cryptography;
using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

/// <summary>
/// Edges of the paging bookkeeping that mutation testing found unchecked (docs/testing.md): the pool's events and
/// <see cref="BlockPool.Unregister"/>, argument guards, the free-list copy into a short buffer, the block hash of a
/// block too large for the stack and its printed form, and the errors' messages (each names what and where).
/// </summary>
public class PagingEdgeTests
{
    private static BlockHash H(int i) => BlockHash.Of(BlockHash.Root, [i]);

    [Fact]
    public void EventsTellTheStorageLayerWhatToDrop()
    {
        var pool = new BlockPool(3, 4);
        var evicted = new List<int>();
        var freed = new List<int>();
        pool.Evicted += evicted.Add;
        pool.Freed += freed.Add;
        int a = pool.Allocate(), b = pool.Allocate(), c = pool.Allocate();
        Assert.True(pool.Prefixes.TryRegister(a, H(1)));
        pool.Release(b);                  // plain: freed at once
        Assert.Equal([b], freed);
        pool.Release(a);                  // cached: kept, nothing freed or evicted yet
        Assert.Equal([b], freed);
        Assert.Empty(evicted);
        Assert.Equal(b, pool.Allocate()); // plain free block first
        Assert.Equal(a, pool.Allocate()); // then the cached one, evicted
        Assert.Equal([a], evicted);
        Assert.Equal(1, pool.EvictionCount);
        Assert.False(pool.Prefixes.IsRegistered(a));
        pool.Release(c);
        Assert.Equal([b, c], freed);
    }

    [Fact]
    public void UnregisterTurnsACachedBlockIntoAPlainFreeOne()
    {
        var pool = new BlockPool(4, 4);
        var freed = new List<int>();
        pool.Freed += freed.Add;
        int a = pool.Allocate(), b = pool.Allocate();
        Assert.True(pool.Prefixes.TryRegister(a, H(1)));
        Assert.True(pool.Prefixes.TryRegister(b, H(2)));
        pool.Release(a);
        Assert.Equal(1, pool.CachedFreeBlockCount);
        Assert.Equal([2, 3, a], BlockPoolTests.FreeList(pool)); // cached at the back

        pool.Unregister(a);
        Assert.False(pool.Prefixes.IsRegistered(a));
        Assert.False(pool.Prefixes.TryGetBlock(H(1), out _));
        Assert.Equal(0, pool.CachedFreeBlockCount);
        Assert.Equal([a, 2, 3], BlockPoolTests.FreeList(pool)); // now reused first
        Assert.Equal([a], freed);
        Assert.Equal(4 - 1, pool.FreeBlockCount);

        pool.Unregister(b);                 // held: only the entry goes
        Assert.False(pool.Prefixes.IsRegistered(b));
        Assert.Equal(1, pool.RefCount(b));
        Assert.Equal([a, 2, 3], BlockPoolTests.FreeList(pool));
        Assert.Equal([a], freed);
        pool.Release(b);                    // no longer cached: freed, to the front
        Assert.Equal([a, b], freed);
        Assert.Equal(b, BlockPoolTests.FreeList(pool)[0]);

        pool.Unregister(3);                 // never registered: nothing happens
        Assert.Equal([a, b], freed);
        Assert.Equal(4, pool.FreeBlockCount);
        Assert.Equal(0, pool.EvictionCount);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Unregister(4));
    }

    [Fact]
    public void FreeListCopyStopsAtTheDestinationsEnd()
    {
        var pool = new BlockPool(6, 2);
        var ids = new int[4];
        Assert.Equal(4, pool.CopyFreeList(ids));
        Assert.Equal([0, 1, 2, 3], ids);
        Assert.Equal(0, pool.CopyFreeList([]));
    }

    [Fact]
    public void GuardsRejectBadArgumentsWithTheirRange()
    {
        var pool = new BlockPool(8, 4);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => pool.RefCount(8));
        Assert.Contains("block id must be in 0..7", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.IsFree(-1));
        Assert.Contains("block 2 is free and caches no prefix", Assert.Throws<InvalidOperationException>(() => pool.AddRef(2)).Message);
        Assert.Contains("block 5 released while free", Assert.Throws<InvalidOperationException>(() => pool.Release(5)).Message);

        var table = new BlockTable(pool);
        Assert.Throws<ArgumentOutOfRangeException>(() => table.BlocksNeededToAppend(-1));
        Assert.Contains("2 slots given for 3 tokens", Assert.Throws<ArgumentException>(() => table.Append(3, new TokenSlot[2])).Message);
        Assert.Contains("table holds 0 tokens", Assert.Throws<ArgumentOutOfRangeException>(() => table.Truncate(1)).Message);
        table.Append(5, default);
        Assert.Contains("only while empty", Assert.Throws<InvalidOperationException>(() => table.AdoptFullBlocks([7])).Message);
        Assert.Contains("block 7 is free; take its reference",
            Assert.Throws<InvalidOperationException>(() => new BlockTable(pool).AdoptFullBlocks([7])).Message);

        Assert.Contains("block 6 is free; only a held, full block",
            Assert.Throws<InvalidOperationException>(() => pool.Prefixes.TryRegister(6, H(1))).Message);
        int held = table[0];
        Assert.True(pool.Prefixes.TryRegister(held, H(1)));
        Assert.Contains($"block {held} is already registered as {H(1)}",
            Assert.Throws<InvalidOperationException>(() => pool.Prefixes.TryRegister(held, H(2))).Message);

        var full = Assert.Throws<KvCacheFullException>(() => table.Append(100, default));
        Assert.Contains("(4 tokens per block)", full.Message);
        var seqs = new PagedSequences(pool);
        Assert.Contains("sequence 5 is not live", Assert.Throws<KeyNotFoundException>(() => seqs.TokenCount(5)).Message);
    }

    [Fact]
    public void FreeListGuards()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new FreeBlockList(-1));
        var list = new FreeBlockList(3);
        Assert.Contains("free block list is empty", Assert.Throws<InvalidOperationException>(() => list.PopFront()).Message);
        Assert.Contains("block 1 is not in the free list", Assert.Throws<InvalidOperationException>(() => list.Remove(1)).Message);
        Assert.Contains("block id must be in 0..2", Assert.Throws<ArgumentOutOfRangeException>(() => list.PushBack(3)).Message);
        list.PushBack(2);
        Assert.Contains("block 2 is already in the free list", Assert.Throws<InvalidOperationException>(() => list.PushFront(2)).Message);
    }

    /// <summary>Blocks of 252 tokens hash on the stack (16 + 4 x 252 = 1024 bytes), larger ones in a rented buffer;
    /// both equal SHA-256 of the documented layout written out here, and the hash prints as 32 hex digits, high half first.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(252)]
    [InlineData(253)]
    [InlineData(1000)]
    public void HashIsSha256OfParentAndTokensAtEverySize(int tokens)
    {
        var rng = new Random(TestSeeds.Of(nameof(HashIsSha256OfParentAndTokensAtEverySize), tokens));
        var ids = Enumerable.Range(0, tokens).Select(_ => rng.Next(-5, 200_000)).ToArray();
        var parent = new BlockHash((ulong)rng.NextInt64(), (ulong)rng.NextInt64());
        var bytes = new byte[16 + 4 * tokens];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, parent.Low);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(8), parent.High);
        for (int i = 0; i < tokens; i++) BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(16 + 4 * i), ids[i]);
        var digest = SHA256.HashData(bytes);
        var expected = new BlockHash(BinaryPrimitives.ReadUInt64LittleEndian(digest), BinaryPrimitives.ReadUInt64LittleEndian(digest.AsSpan(8)));
        for (int repeat = 0; repeat < 3; repeat++) Assert.Equal(expected, BlockHash.Of(parent, ids)); // a reused buffer is clean
        string printed = expected.ToString();
        Assert.Equal(32, printed.Length);
        Assert.Equal(expected.High, Convert.ToUInt64(printed[..16], 16));
        Assert.Equal(expected.Low, Convert.ToUInt64(printed[16..], 16));
    }
}
