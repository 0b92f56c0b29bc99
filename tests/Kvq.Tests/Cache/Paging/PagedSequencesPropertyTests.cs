using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

/// <summary>
/// Seeded random runs of create/append/fork/truncate/free/prefix-lookup against <see cref="ModelSequences"/>, with a
/// simulated storage layer that performs the reported copies and writes each token into its slot. Small pools make
/// full-cache errors and evictions frequent; a 4-token alphabet and shared "documents" make prefix hits and
/// duplicate blocks frequent.
/// </summary>
public class PagedSequencesPropertyTests
{
    private const int Steps = 2500;
    private const int MaxLive = 8;

    private sealed class Coverage
    {
        public int Hits, Copies, Full, OverwritesOfCached, Forks, Truncates, Frees;
    }

    [Theory]
    [InlineData(1, 12, 101)]
    [InlineData(1, 40, 102)]
    [InlineData(3, 7, 103)]
    [InlineData(3, 24, 104)]
    [InlineData(16, 6, 105)]
    [InlineData(16, 20, 106)]
    public void RandomOperations_KeepInvariantsAndMatchModel(int tokensPerBlock, int blockCount, int seed)
    {
        int b = tokensPerBlock;
        var rng = new Random(seed);
        var impl = new PagedSequences(blockCount, b);
        var model = new ModelSequences(blockCount, b);
        var storage = new int[blockCount, b];
        for (int i = 0; i < blockCount; i++)
            for (int o = 0; o < b; o++) storage[i, o] = -1;
        var docs = new int[3][];
        for (int d = 0; d < docs.Length; d++) docs[d] = RandomTokens(rng, 6 * b + 2);
        var cov = new Coverage();

        for (int step = 0; step < Steps; step++)
        {
            int op = rng.Next(100);
            int live = model.Live.Count;
            if (live == 0 || (op < 20 && live < MaxLive))
            {
                var doc = docs[rng.Next(docs.Length)];
                var prompt = doc.AsSpan(0, rng.Next(doc.Length + 1)).ToArray();
                if (prompt.Length > 0 && rng.Next(3) == 0) prompt[rng.Next(prompt.Length)] = rng.Next(4);
                int expectedId = model.Create(prompt, out int expectedCached);
                int id = impl.Create(prompt, out int cached);
                Assert.Equal(expectedId, id);
                Assert.Equal(expectedCached, cached);
                if (cached > 0) cov.Hits++;
                Append(impl, model, storage, id, prompt.AsSpan(cached).ToArray(), cov);
            }
            else
            {
                int id = PickLive(model, rng);
                int count = model.Live[id].Tokens.Count;
                if (op < 55)
                {
                    // Half the time continue a document, so independent sequences produce identical blocks.
                    int n = rng.Next(2 * b + 3);
                    var doc = docs[rng.Next(docs.Length)];
                    var tokens = rng.Next(2) == 0 && count + n <= doc.Length
                        ? doc.AsSpan(count, n).ToArray()
                        : RandomTokens(rng, n);
                    Append(impl, model, storage, id, tokens, cov);
                }
                else if (op < 65 && live < MaxLive)
                {
                    Assert.Equal(model.Fork(id), impl.Fork(id));
                    cov.Forks++;
                }
                else if (op < 80)
                {
                    int keep = rng.Next(count + 1);
                    model.Truncate(id, keep);
                    impl.Truncate(id, keep);
                    cov.Truncates++;
                }
                else if (op < 92)
                {
                    model.Free(id);
                    impl.Free(id);
                    Assert.False(impl.IsLive(id));
                    cov.Frees++;
                }
                else
                {
                    var doc = docs[rng.Next(docs.Length)];
                    var probe = doc.AsSpan(0, rng.Next(doc.Length + 1)).ToArray();
                    Assert.Equal(model.CountCached(probe, int.MaxValue), impl.Pool.Prefixes.CountCachedBlocks(probe));
                }
            }
            PagingInvariants.CheckSequences(impl, model, storage, step);
        }

        // The run must have exercised every path it claims to test.
        Assert.True(cov.Hits > 0 && cov.Full > 0 && cov.Forks > 0 && cov.Truncates > 0 && cov.Frees > 0,
            $"hits {cov.Hits}, copies {cov.Copies}, full {cov.Full}, forks {cov.Forks}, truncates {cov.Truncates}, frees {cov.Frees}");
        Assert.True(impl.Pool.EvictionCount > 0, "no cached block was ever evicted");
        // With one token per block no block is ever partial: nothing to copy or overwrite.
        Assert.Equal(b > 1, cov.Copies > 0);
        Assert.Equal(b > 1, cov.OverwritesOfCached > 0);
    }

    private static void Append(PagedSequences impl, ModelSequences model, int[,] storage, int id, int[] tokens,
        Coverage cov)
    {
        var expectedSlots = new List<TokenSlot>();
        int registeredBefore = model.Pool.HashByBlock.Count, evictionsBefore = (int)model.Pool.Evictions;
        bool ok = model.TryAppend(id, tokens, expectedSlots, out var expectedCopy, out int needed);
        var slots = new TokenSlot[tokens.Length];
        if (!ok)
        {
            var ex = Assert.Throws<KvCacheFullException>(() => impl.Append(id, tokens, slots));
            Assert.Equal(needed, ex.RequestedBlocks);
            Assert.Equal(model.Pool.Free.Count, ex.AvailableBlocks);
            cov.Full++;
            return;
        }
        var copy = impl.Append(id, tokens, slots);
        Assert.Equal(expectedCopy, copy);
        Assert.Equal(expectedSlots, slots);
        // A registration lost without an eviction means a sole holder overwrote its own cached block.
        if (model.Pool.HashByBlock.Count < registeredBefore && model.Pool.Evictions == evictionsBefore)
            cov.OverwritesOfCached++;
        // The storage layer's side: copy first, then write each token into its slot.
        if (copy is { } c)
        {
            cov.Copies++;
            for (int o = 0; o < c.TokenCount; o++) storage[c.DestinationBlockId, o] = storage[c.SourceBlockId, o];
        }
        for (int i = 0; i < tokens.Length; i++) storage[slots[i].BlockId, slots[i].Offset] = tokens[i];
    }

    private static int PickLive(ModelSequences model, Random rng)
    {
        int k = rng.Next(model.Live.Count);
        foreach (int id in model.Live.Keys)
            if (k-- == 0) return id;
        throw new InvalidOperationException("unreachable");
    }

    private static int[] RandomTokens(Random rng, int n)
    {
        var t = new int[n];
        for (int i = 0; i < n; i++) t[i] = rng.Next(4);
        return t;
    }
}
