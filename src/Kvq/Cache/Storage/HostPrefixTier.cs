using Kvq.Cache.Paging;

namespace Kvq.Cache.Storage;

/// <summary>
/// Cached prefix blocks that the block pool evicted, kept in host memory (issue 20: "the prefix cache can keep cold
/// prefixes in host memory"): when the pool reuses a cached block for new content, its encoded bytes (every layer,
/// keys and values, sparse outlier rows included: <see cref="BlockArena.CopyOut"/>) and, for a first block, its exact
/// sink copies are copied here under the block's chained <see cref="BlockHash"/>; a later prompt whose prefix runs on
/// past what the pool still holds takes them back into fresh blocks instead of running the model over them. Least
/// recently stored first out when <see cref="BudgetBytes"/> would be passed. On the CPU the pool is RAM too, so this
/// tier matters as a second, larger budget for cold prefixes (the pool's budget is for running sequences); the same
/// type sits behind a device pool.
/// </summary>
public sealed class HostPrefixTier(long budgetBytes)
{
    private readonly Dictionary<BlockHash, LinkedListNode<Entry>> _byHash = new();
    private readonly LinkedList<Entry> _lru = new();   // newest first

    /// <summary>One block's content as stored: per layer, keys and values as <see cref="BlockArena.CopyOut"/> wrote them.</summary>
    internal sealed record Entry(BlockHash Hash, byte[][] Keys, byte[][] Values, (Half[] Keys, Half[] Values)? Sinks, long Bytes);

    public long BudgetBytes { get; } = budgetBytes > 0 ? budgetBytes : throw new ArgumentOutOfRangeException(nameof(budgetBytes));
    /// <summary>Bytes held now.</summary>
    public long Bytes { get; private set; }
    public int Count => _byHash.Count;
    /// <summary>Blocks copied in from evictions.</summary>
    public long Stored { get; private set; }
    /// <summary>Blocks taken back by a prompt.</summary>
    public long Hits { get; private set; }
    /// <summary>Blocks dropped for room (or larger than the whole budget).</summary>
    public long Dropped { get; private set; }

    internal void Put(BlockHash hash, byte[][] keys, byte[][] values, (Half[] Keys, Half[] Values)? sinks)
    {
        long bytes = 0;
        foreach (var k in keys) bytes += k.Length;
        foreach (var v in values) bytes += v.Length;
        if (sinks is { } s) bytes += 2L * (s.Keys.Length + s.Values.Length);
        Remove(hash);
        if (bytes > BudgetBytes)
        {
            Dropped++;
            return;
        }
        _byHash[hash] = _lru.AddFirst(new Entry(hash, keys, values, sinks, bytes));
        Bytes += bytes;
        Stored++;
        while (Bytes > BudgetBytes)
        {
            Remove(_lru.Last!.Value.Hash);
            Dropped++;
        }
    }

    /// <summary>Takes the block out (it goes back into the pool, which registers it again). With
    /// <paramref name="needsSinks"/> (a first block under sink tokens) an entry stored without its sink copies is a miss
    /// and stays here.</summary>
    internal bool TryTake(BlockHash hash, bool needsSinks, out Entry entry)
    {
        if (!_byHash.TryGetValue(hash, out var node) || (needsSinks && node.Value.Sinks == null))
        {
            entry = null!;
            return false;
        }
        entry = node.Value;
        Remove(hash);
        Hits++;
        return true;
    }

    private void Remove(BlockHash hash)
    {
        if (!_byHash.Remove(hash, out var node)) return;
        _lru.Remove(node);
        Bytes -= node.Value.Bytes;
    }
}
