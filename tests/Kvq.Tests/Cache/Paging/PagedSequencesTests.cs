using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

public class PagedSequencesTests
{
    private static int[] Tokens(int seed, int count)
    {
        var rng = new Random(seed);
        var t = new int[count];
        for (int i = 0; i < count; i++) t[i] = rng.Next(32000);
        return t;
    }

    private static BlockCopy? Append(PagedSequences seqs, int id, ReadOnlySpan<int> tokens) =>
        seqs.Append(id, tokens, new TokenSlot[tokens.Length]);

    [Fact]
    public void TwoSequencesSharingA2000TokenPrompt_HoldItOnce()
    {
        const int b = 16;
        var seqs = new PagedSequences(400, b);
        int[] system = Tokens(1, 2000);                      // 125 full blocks
        int[] promptA = [.. system, .. Tokens(2, 37)];
        int[] promptB = [.. system, .. Tokens(3, 50)];

        int a = seqs.Create(promptA, out int cachedA);
        Assert.Equal(0, cachedA);
        Append(seqs, a, promptA);
        int bId = seqs.Create(promptB, out int cachedB);
        Assert.Equal(2000, cachedB);
        Assert.Equal(system, seqs.TokenIds(bId).ToArray());
        Assert.Equal(seqs.BlockIds(a)[..125].ToArray(), seqs.BlockIds(bId).ToArray());
        Append(seqs, bId, promptB.AsSpan(cachedB));

        Assert.Equal(new SequenceBlockUsage(2037, 128, 3, 125), seqs.Usage(a));
        Assert.Equal(new SequenceBlockUsage(2050, 129, 4, 125), seqs.Usage(bId));
        // 132 blocks stored for 257 block references: the shared prompt is held once.
        Assert.Equal(new PoolBlockUsage(400, 132, 125, 257, 0, 268), seqs.Pool.Usage);

        // A's own full blocks (125 and 126) stay cached after it ends; its partial last block is plain free.
        seqs.Free(a);
        Assert.False(seqs.IsLive(a));
        Assert.Equal(new PoolBlockUsage(400, 129, 0, 129, 2, 271), seqs.Pool.Usage);
        int again = seqs.Create(promptA, out int cachedAgain);
        Assert.Equal(2032, cachedAgain);                     // 127 full blocks, all but the partial tail
        Assert.Equal(0, seqs.Pool.CachedFreeBlockCount);
        Assert.Equal(127, seqs.Usage(again).Blocks);
    }

    [Fact]
    public void FullyCachedPrompt_LeavesTheLastBlockToRecompute()
    {
        var seqs = new PagedSequences(8, 3);
        int[] prompt = { 1, 2, 3, 4, 5, 6 };
        int first = seqs.Create(prompt, out _);
        Append(seqs, first, prompt);
        Assert.Equal(2, seqs.Pool.Prefixes.CountCachedBlocks(prompt));
        int second = seqs.Create(prompt, out int cached);
        Assert.Equal(3, cached);                             // not 6: the model must run the last prompt token
        Assert.Equal(new[] { 1, 2, 3 }, seqs.TokenIds(second).ToArray());
        int empty = seqs.Create(ReadOnlySpan<int>.Empty, out int none);
        Assert.Equal(0, none);
        Assert.Equal(0, seqs.TokenCount(empty));
        Assert.Equal(3, seqs.Count);
    }

    [Fact]
    public void Fork_ThenAppend_ReportsCopyAndKeepsTokensApart()
    {
        var seqs = new PagedSequences(8, 4);
        int parent = seqs.Create(new[] { 9, 9 }, out _);
        Append(seqs, parent, new[] { 9, 9, 1, 2, 3, 4, 5 });  // 1 full block + 3 tokens
        int child = seqs.Fork(parent);
        Assert.Equal(new SequenceBlockUsage(7, 2, 0, 2), seqs.Usage(child));
        var slots = new TokenSlot[1];
        var copy = seqs.Append(child, new[] { 42 }, slots);
        Assert.Equal(new BlockCopy(1, 2, 3), copy);
        Assert.Equal(new TokenSlot(2, 3), slots[0]);
        Assert.Equal(new[] { 9, 9, 1, 2, 3, 4, 5, 42 }, seqs.TokenIds(child).ToArray());
        Assert.Equal(new[] { 9, 9, 1, 2, 3, 4, 5 }, seqs.TokenIds(parent).ToArray());
        Assert.Equal(new SequenceBlockUsage(7, 2, 1, 1), seqs.Usage(parent));
    }

    [Fact]
    public void TruncateThenRefill_RegistersTheNewContent()
    {
        var seqs = new PagedSequences(8, 2);
        int s = seqs.Create(new[] { 1, 2, 3, 4 }, out _);
        Append(seqs, s, new[] { 1, 2, 3, 4 });
        seqs.Truncate(s, 3);
        Assert.Equal(2, seqs.Pool.Prefixes.CountCachedBlocks(new[] { 1, 2, 3, 4 }));
        Append(seqs, s, new[] { 7 });                        // overwrites block 1 in place
        Assert.Equal(1, seqs.Pool.Prefixes.CountCachedBlocks(new[] { 1, 2, 3, 4 }));
        Assert.Equal(2, seqs.Pool.Prefixes.CountCachedBlocks(new[] { 1, 2, 3, 7 }));
        Assert.Equal(new[] { 1, 2, 3, 7 }, seqs.TokenIds(s).ToArray());
    }

    [Fact]
    public void UnknownOrFreedSequence_Throws()
    {
        var seqs = new PagedSequences(4, 2);
        int s = seqs.Create(new[] { 1 }, out _);
        seqs.Free(s);
        Assert.Throws<KeyNotFoundException>(() => seqs.TokenCount(s));
        Assert.Throws<KeyNotFoundException>(() => seqs.Free(s));
        Assert.Throws<KeyNotFoundException>(() => seqs.Fork(17));
    }

    [Fact]
    public void AppendBeyondCapacity_ThrowsTypedAndChangesNothing()
    {
        var seqs = new PagedSequences(3, 4);
        int s = seqs.Create(new[] { 1 }, out _);
        Append(seqs, s, new[] { 1, 2, 3, 4, 5 });
        Assert.Equal(2, seqs.BlocksNeededToAppend(s, 8));
        var ex = Assert.Throws<KvCacheFullException>(() => Append(seqs, s, new int[8]));
        Assert.Equal((2, 1), (ex.RequestedBlocks, ex.AvailableBlocks));
        Assert.Equal(5, seqs.TokenCount(s));
        Assert.Equal(5, seqs.TokenIds(s).Length);
        Assert.Equal(2, seqs.BlockIds(s).Length);
    }
}
