using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

/// <summary>
/// Invariants checked after every step of a property test. The first group needs only the implementation (refcounts
/// against table references, free-list shape, counters, stored content); the second compares it with the plain model
/// (same ids, same free-list order, hence the same LRU eviction victims).
/// </summary>
internal static class PagingInvariants
{
    /// <param name="tableRefs">Per block id, how many block tables (or test-held references) name it.</param>
    public static void CheckPool(BlockPool pool, ModelPool model, int[] tableRefs, int step)
    {
        int n = pool.BlockCount;
        var refs = new int[n];
        int shared = 0, total = 0, registered = 0, cachedFree = 0;
        for (int b = 0; b < n; b++)
        {
            refs[b] = pool.RefCount(b);
            // The index pins nothing: every reference is a table entry.
            if (refs[b] != tableRefs[b])
                Assert.Fail($"step {step}: block {b} refcount {refs[b]} but {tableRefs[b]} table references");
            if (refs[b] > 1) shared++;
            total += refs[b];
            if (pool.Prefixes.TryGetHash(b, out var hash))
            {
                registered++;
                if (refs[b] == 0) cachedFree++;
                Assert.True(pool.Prefixes.TryGetBlock(hash, out int back) && back == b,
                    $"step {step}: block {b}'s hash does not map back to it");
            }
        }

        var free = BlockPoolTests.FreeList(pool);
        var seen = new bool[n];
        foreach (int id in free)
        {
            Assert.False(seen[id], $"step {step}: block {id} twice in the free list");
            seen[id] = true;
            Assert.True(refs[id] == 0, $"step {step}: block {id} is free with refcount {refs[id]}");
        }
        for (int b = 0; b < n; b++)
            Assert.True(refs[b] != 0 || seen[b], $"step {step}: block {b} has refcount 0 but is not in the free list");
        var backward = FreeBlockListTests.Backward(pool.FreeList);
        backward.Reverse();
        Assert.Equal(free, backward);

        Assert.Equal(new PoolBlockUsage(n, n - free.Length, shared, total, cachedFree, free.Length), pool.Usage);
        Assert.Equal(registered, pool.Prefixes.Count);

        // Against the model: same refcounts, same registrations, and the free list in the same order.
        Assert.Equal(model.Ref, refs);
        Assert.Equal(model.Free, free);
        Assert.Equal(model.HashByBlock.Count, registered);
        foreach (var (b, hash) in model.HashByBlock)
            Assert.True(pool.Prefixes.TryGetHash(b, out var got) && got == hash, $"step {step}: block {b} hash differs");
        Assert.Equal(model.Evictions, pool.EvictionCount);
    }

    /// <param name="storage">(block, offset) -> token id written there by the test's simulated storage layer.</param>
    public static void CheckSequences(PagedSequences impl, ModelSequences model, int[,] storage, int step)
    {
        var pool = impl.Pool;
        int b = pool.TokensPerBlock;
        var tableRefs = new int[pool.BlockCount];
        Assert.Equal(model.Live.Count, impl.Count);
        foreach (var (id, seq) in model.Live)
        {
            Assert.True(impl.IsLive(id), $"step {step}: sequence {id} should be live");
            var ids = impl.BlockIds(id);
            var tokens = impl.TokenIds(id);
            Assert.Equal(tokens.Length, impl.TokenCount(id));
            Assert.Equal((tokens.Length + b - 1) / b, ids.Length);
            Assert.Equal(seq.Blocks, ids.ToArray());
            Assert.Equal(seq.Tokens, tokens.ToArray());
            for (int i = 0; i < ids.Length; i++)
            {
                for (int j = 0; j < i; j++)
                    Assert.True(ids[i] != ids[j], $"step {step}: block {ids[i]} twice in sequence {id}");
                tableRefs[ids[i]]++;
                // A registered block this sequence holds whole must be registered under this sequence's own chain.
                if (i < seq.Hashes.Count && pool.Prefixes.TryGetHash(ids[i], out var hash))
                    Assert.True(hash == seq.Hashes[i], $"step {step}: block {ids[i]} registered under another prefix");
            }
            // What the sequence reads through its table is what it wrote: no lost copy, no overwritten share.
            for (int t = 0; t < tokens.Length; t++)
                if (storage[ids[t / b], t % b] != tokens[t])
                    Assert.Fail($"step {step}: sequence {id} token {t} reads {storage[ids[t / b], t % b]}, wrote {tokens[t]}");
        }
        // A prefix hit may serve any registered block, so its stored content must still be what was registered.
        Assert.Equal(model.Pool.HashByBlock.Count, model.Pool.Content.Count);
        foreach (var (block, content) in model.Pool.Content)
            for (int o = 0; o < b; o++)
                if (storage[block, o] != content[o])
                    Assert.Fail($"step {step}: cached block {block} slot {o} holds {storage[block, o]}, registered {content[o]}");
        CheckPool(pool, model.Pool, tableRefs, step);
    }
}
