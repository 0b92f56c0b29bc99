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
/// <remarks>With a <see cref="Disk"/> tier behind it, what host memory has no room for goes to disk instead of being
/// dropped (the least recently stored blocks first), and a take looks there after host memory.</remarks>
public sealed class HostPrefixTier(long budgetBytes, PrefixFileTier? disk = null)
{
    private readonly Dictionary<BlockHash, LinkedListNode<Entry>> _byHash = new();
    private readonly LinkedList<Entry> _lru = new();   // newest first

    /// <summary>One block's content as stored: per layer, keys and values as <see cref="BlockArena.CopyOut"/> wrote them.</summary>
    internal sealed record Entry(BlockHash Hash, byte[][] Keys, byte[][] Values, (Half[] Keys, Half[] Values)? Sinks, long Bytes);

    /// <summary>Host bytes (0 only with a disk tier: every block then goes straight to disk).</summary>
    public long BudgetBytes { get; } = budgetBytes > 0 || (budgetBytes == 0 && disk != null) ? budgetBytes
        : throw new ArgumentOutOfRangeException(nameof(budgetBytes), $"the host prefix tier's budget must be above 0 bytes (got {budgetBytes})");
    /// <summary>The disk tier behind host memory (null: blocks with no room are dropped).</summary>
    public PrefixFileTier? Disk { get; } = disk;
    /// <summary>Bytes held now.</summary>
    public long Bytes { get; private set; }
    public int Count => _byHash.Count;
    /// <summary>Blocks copied in from evictions.</summary>
    public long Stored { get; private set; }
    /// <summary>Blocks taken back by a prompt from host memory (<see cref="PrefixFileTier.Hits"/>: from disk).</summary>
    public long Hits { get; private set; }
    /// <summary>Blocks that left host memory for room (or larger than the whole budget): dropped, or moved to
    /// <see cref="Disk"/>.</summary>
    public long Dropped { get; private set; }

    /// <summary>Bytes an entry takes in host memory: its arrays.</summary>
    internal static long EntryBytes(byte[][] keys, byte[][] values, (Half[] Keys, Half[] Values)? sinks)
    {
        long bytes = 0;
        foreach (var k in keys) bytes += k.Length;
        foreach (var v in values) bytes += v.Length;
        if (sinks is { } s) bytes += 2L * (s.Keys.Length + s.Values.Length);
        return bytes;
    }

    internal void Put(BlockHash hash, byte[][] keys, byte[][] values, (Half[] Keys, Half[] Values)? sinks)
    {
        long bytes = EntryBytes(keys, values, sinks);
        Remove(hash);
        Disk?.Remove(hash);   // one copy: the newest, in host memory
        var entry = new Entry(hash, keys, values, sinks, bytes);
        if (bytes > BudgetBytes)
        {
            Dropped++;
            Disk?.Put(entry);
            return;
        }
        _byHash[hash] = _lru.AddFirst(entry);
        Bytes += bytes;
        Stored++;
        while (Bytes > BudgetBytes)
        {
            var oldest = _lru.Last!.Value;
            Remove(oldest.Hash);
            Dropped++;
            Disk?.Put(oldest);
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
            return Disk != null && Disk.TryTake(hash, needsSinks, out entry);
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
