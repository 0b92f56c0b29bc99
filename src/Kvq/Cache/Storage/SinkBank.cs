namespace Kvq.Cache.Storage;

/// <summary>
/// The exact sink copies (the first tokens, f16) of sequences whose first block is registered for prefix sharing,
/// keyed by that block's id, so a later sequence that reuses the block gets the sinks too. Bounded: at capacity the
/// oldest entry goes, and its block must be unregistered (a prefix without its sinks cannot be reused). A fixed
/// reserve of <see cref="Capacity"/> entries, so a byte budget can count it up front.
/// </summary>
public sealed class SinkBank(int capacity, long entryBytes)
{
    private readonly Dictionary<int, (Half[] Keys, Half[] Values)> _byBlock = new();
    private readonly Queue<int> _order = new();

    public int Capacity => capacity;
    public int Count => _byBlock.Count;
    /// <summary>Bytes the bank may hold at capacity.</summary>
    public long ReservedBytes => capacity * entryBytes;

    /// <summary>Keeps copies of <paramref name="keys"/> and <paramref name="values"/> for <paramref name="blockId"/>.
    /// Returns the block whose entry was dropped to make room, or -1.</summary>
    public int Put(int blockId, SinkStore keys, SinkStore values)
    {
        int dropped = -1;
        if (!_byBlock.ContainsKey(blockId))
        {
            while (_byBlock.Count >= capacity && _order.TryDequeue(out int old))
                if (_byBlock.Remove(old)) { dropped = old; break; }
            _order.Enqueue(blockId);
        }
        _byBlock[blockId] = (keys.Save(), values.Save());
        return dropped;
    }

    /// <summary>Copies the entry of <paramref name="blockId"/> into a new sequence's sink stores.</summary>
    public bool TryRestore(int blockId, SinkStore keys, SinkStore values)
    {
        if (!_byBlock.TryGetValue(blockId, out var e)) return false;
        keys.Restore(e.Keys);
        values.Restore(e.Values);
        return true;
    }

    public bool Contains(int blockId) => _byBlock.ContainsKey(blockId);

    /// <summary>The entry of <paramref name="blockId"/> (not copied: the caller keeps it as it is), if any.</summary>
    internal bool TryGet(int blockId, out (Half[] Keys, Half[] Values) entry) => _byBlock.TryGetValue(blockId, out entry);

    /// <summary>The block's content is being replaced: its entry goes.</summary>
    public void Remove(int blockId) => _byBlock.Remove(blockId);
}
