using Kvq.Cache.Paging;

namespace Kvq.Cache.Storage;

/// <summary>
/// What a new sequence finds of its prompt before the model runs: the pool's cached blocks (prefix hashes), with the
/// sink copies the cache's <see cref="SinkBank"/> kept beside block 0, then whole blocks that the host tier kept
/// (<see cref="HostPrefixTier"/>), copied into freshly allocated blocks as stored.
/// </summary>
internal static class PrefixReuse
{
    /// <summary>Completes sequence <paramref name="id"/>'s prefix: <paramref name="cached"/> tokens came from the pool
    /// (its blocks are in the sequence already). Returns the tokens kept from the pool (0 when their sink copies are
    /// gone) and those added from the host tier.</summary>
    public static (int FromPool, int FromHost) Restore(PagedKvCache cache, int id, ReadOnlySpan<int> prompt, int cached,
        KvSideStore keys, KvSideStore values, bool register)
    {
        if (cached > 0 && keys.Sink != null && !cache.Sinks!.TryRestore(cache.Sequences.BlockIds(id)[0], keys.Sink, values.Sink!))
        {
            // The prefix's sink copies are gone (cannot happen while the bank unregisters what it drops): start empty.
            cache.Sequences.Truncate(id, 0);
            cached = 0;
        }
        int fromHost = cache.HostPrefixes is { } tier ? TakeFromHost(cache, tier, id, prompt, cached, keys, values, register) : 0;
        return (cached, fromHost);
    }

    /// <summary>Each matching whole block after the pool's (at most all but the last prompt token, as from the pool)
    /// goes into a freshly allocated block. Stops at the first miss or when no block is free.</summary>
    private static int TakeFromHost(PagedKvCache cache, HostPrefixTier tier, int id, ReadOnlySpan<int> prompt, int cached,
        KvSideStore keys, KvSideStore values, bool register)
    {
        int b = cache.Config.BlockTokens, maxBlocks = prompt.IsEmpty ? 0 : (prompt.Length - 1) / b;
        // The pool hit's blocks were hashed while they were looked up: continue the chain from the last one.
        var parent = cache.Sequences.LastBlockHash(id);
        bool sinks = keys.Sink != null;
        int added = 0;
        for (int i = cached / b; i < maxBlocks; i++)
        {
            if (cache.Sequences.Pool.FreeBlockCount == 0) break;
            var tokens = prompt.Slice(i * b, b);
            var hash = BlockHash.Of(parent, tokens);
            if (!tier.TryTake(hash, needsSinks: sinks && i == 0, out var entry)) break;
            cache.Sequences.Append(id, tokens, register);
            cache.CopyIn([cache.Sequences.BlockIds(id)[^1]], entry.Keys, entry.Values);
            if (sinks && i == 0)
            {
                keys.Sink!.Restore(entry.Sinks!.Value.Keys);
                values.Sink!.Restore(entry.Sinks.Value.Values);
            }
            parent = hash;
            added += b;
        }
        return added;
    }
}
