using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

public class BlockTableTests
{
    private static TokenSlot[] Append(BlockTable table, int tokens, out BlockCopy? copy)
    {
        var slots = new TokenSlot[tokens];
        copy = table.Append(tokens, slots);
        return slots;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(16)]
    public void Append_FillsBlocksInOrder(int b)
    {
        var pool = new BlockPool(10, b);
        var table = new BlockTable(pool);
        int tokens = 2 * b + 1;
        Assert.Equal(3, table.BlocksNeededToAppend(tokens));
        var slots = Append(table, tokens, out var copy);
        Assert.Null(copy);
        for (int t = 0; t < tokens; t++) Assert.Equal(new TokenSlot(t / b, t % b), slots[t]);
        Assert.Equal(tokens, table.TokenCount);
        Assert.Equal(new[] { 0, 1, 2 }, table.BlockIds.ToArray());
        Assert.Equal(0, table.BlocksNeededToAppend(b - 1)); // fits in the partial last block
        Assert.Equal(1, table.BlocksNeededToAppend(b));
    }

    [Fact]
    public void Append_WhenFull_ThrowsAndChangesNothing()
    {
        var pool = new BlockPool(2, 3);
        var table = new BlockTable(pool);
        Append(table, 4, out _);
        var ex = Assert.Throws<KvCacheFullException>(() => table.Append(3, new TokenSlot[3]));
        Assert.Equal((1, 0), (ex.RequestedBlocks, ex.AvailableBlocks));
        Assert.Equal(4, table.TokenCount);
        Assert.Equal(2, table.BlockCount);
        Assert.Throws<ArgumentException>(() => table.Append(2, new TokenSlot[1]));
        Assert.Equal(2, Append(table, 2, out _).Length); // exactly fills the last block: no new block needed
    }

    [Fact]
    public void Fork_SharesBlocks_AndCopyOnWriteSplitsThePartialBlock()
    {
        var pool = new BlockPool(6, 4);
        var parent = new BlockTable(pool);
        Append(parent, 6, out _);                      // blocks 0 (full), 1 (2 of 4)
        var child = parent.Fork();
        Assert.Equal(parent.BlockIds.ToArray(), child.BlockIds.ToArray());
        Assert.Equal(2, pool.RefCount(0));
        Assert.Equal(2, pool.RefCount(1));
        Assert.Equal(1, child.BlocksNeededToAppend(1)); // only the copy target
        Assert.Equal(2, child.BlocksNeededToAppend(3)); // copy target plus one new block
        var slots = Append(child, 3, out var copy);
        Assert.Equal(new BlockCopy(1, 2, 2), copy);    // copy the 2 tokens already in block 1 into fresh block 2
        Assert.Equal(new[] { new TokenSlot(2, 2), new TokenSlot(2, 3), new TokenSlot(3, 0) }, slots);
        Assert.Equal(new[] { 0, 2, 3 }, child.BlockIds.ToArray());
        Assert.Equal((2, 1), (pool.RefCount(0), pool.RefCount(1)));
        // The parent is now the only holder of block 1: it writes in place.
        slots = Append(parent, 1, out copy);
        Assert.Null(copy);
        Assert.Equal(new TokenSlot(1, 2), slots[0]);
    }

    [Fact]
    public void Fork_OfFullLastBlock_NeedsNoCopy()
    {
        var pool = new BlockPool(4, 3);
        var parent = new BlockTable(pool);
        Append(parent, 3, out _);
        var child = parent.Fork();
        Assert.Equal(1, child.BlocksNeededToAppend(1));
        Append(child, 1, out var copy);
        Assert.Null(copy);
        Assert.Equal(new[] { 0, 1 }, child.BlockIds.ToArray());
    }

    [Fact]
    public void Truncate_ReleasesWholeBlocksLastFirst()
    {
        var pool = new BlockPool(5, 3);
        var table = new BlockTable(pool);
        Append(table, 13, out _);                      // blocks 0..4, last holds 1 token
        table.Truncate(4);                             // keeps blocks 0 and 1 (1 token in block 1)
        Assert.Equal(new[] { 0, 1 }, table.BlockIds.ToArray());
        Assert.Equal(4, table.TokenCount);
        Assert.Equal(new[] { 2, 3, 4 }, BlockPoolTests.FreeList(pool)); // 4 released first, then 3, then 2 to the front
        var slots = Append(table, 2, out var copy);
        Assert.Null(copy);
        Assert.Equal(new[] { new TokenSlot(1, 1), new TokenSlot(1, 2) }, slots);
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Truncate(7));
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Truncate(-1));
        table.Clear();
        Assert.Equal(0, table.BlockCount);
        Assert.Equal(5, pool.FreeBlockCount);
    }

    [Fact]
    public void WritingIntoRegisteredBlock_HeldAlone_DropsItsPrefixEntry()
    {
        var pool = new BlockPool(4, 2);
        var table = new BlockTable(pool);
        Append(table, 2, out _);
        var hash = BlockHash.Of(BlockHash.Root, new[] { 1, 2 });
        Assert.True(pool.Prefixes.TryRegister(0, hash));
        table.Truncate(1);
        Assert.True(pool.Prefixes.IsRegistered(0));    // still intact until actually overwritten
        Append(table, 1, out var copy);
        Assert.Null(copy);
        Assert.False(pool.Prefixes.IsRegistered(0));
        Assert.False(pool.Prefixes.TryGetBlock(hash, out _));
    }

    [Fact]
    public void WritingIntoRegisteredBlock_Shared_CopiesAndKeepsTheEntry()
    {
        var pool = new BlockPool(4, 2);
        var table = new BlockTable(pool);
        Append(table, 2, out _);
        var hash = BlockHash.Of(BlockHash.Root, new[] { 1, 2 });
        pool.Prefixes.TryRegister(0, hash);
        table.Truncate(1);
        var other = new BlockTable(pool);
        var hit = new int[1];
        Assert.Equal(1, pool.Prefixes.AcquirePrefix(new[] { 1, 2 }, hit, new BlockHash[1]));
        other.AdoptFullBlocks(hit);
        Assert.Equal(2, other.TokenCount);
        Append(table, 1, out var copy);
        Assert.Equal(new BlockCopy(0, 1, 1), copy);
        Assert.True(pool.Prefixes.TryGetBlock(hash, out int still) && still == 0);
    }

    [Fact]
    public void AdoptFullBlocks_RequiresEmptyTableAndHeldBlocks()
    {
        var pool = new BlockPool(4, 2);
        var table = new BlockTable(pool);
        Assert.Throws<InvalidOperationException>(() => table.AdoptFullBlocks(new[] { 3 }));
        Append(table, 1, out _);
        Assert.Throws<InvalidOperationException>(() => table.AdoptFullBlocks(new[] { 0 }));
    }
}
