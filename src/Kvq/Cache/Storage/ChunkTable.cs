namespace Kvq.Cache.Storage;

/// <summary>
/// The chunks of an arena, extended by one thread while others read them: sequences of one cache append on several
/// threads at once in a batched step (Transformer.ForwardBatch), and two of them may reach a new chunk together.
/// Readers take the published array without a lock; growth copies it under the lock and publishes the longer one, so a
/// reader sees the old array or a complete new one, never a slot that is counted but not yet filled. (A
/// <see cref="List{T}"/> read this way raises its Count before it stores the item: a reader could take an empty slot,
/// and a null chunk's AsSpan threw ArgumentOutOfRangeException in a serving step, ~1 in 40 runs of Kvq.Server.Tests.)
/// Chunks are few (64 blocks each), so copying the table on growth costs nothing that matters.
/// </summary>
internal sealed class ChunkTable<T>
{
    private volatile T[] _items = [];
    private readonly Lock _lock = new();

    /// <summary>The chunks published so far (a snapshot: index it, never write it).</summary>
    public T[] Items => _items;

    public int Count => _items.Length;

    /// <summary>Chunk <paramref name="index"/>, made (with every chunk before it) by <paramref name="make"/>(i) under the
    /// lock if it is not there yet. A chunk that cannot be made leaves the ones made before it published.</summary>
    public T GetOrAdd<TState>(int index, TState state, Func<TState, int, T> make)
    {
        var items = _items;
        if (index < items.Length) return items[index];
        lock (_lock)
        {
            while (_items.Length <= index)
            {
                var old = _items;
                var grown = new T[old.Length + 1];
                old.CopyTo(grown, 0);
                grown[old.Length] = make(state, old.Length);
                _items = grown;
            }
            return _items[index];
        }
    }
}
