namespace Kvq.Cache.Paging;

/// <summary>
/// One sequence's blocks in its sliding-window layers when the cache keeps them in rings (<see cref="KvCacheConfig.SlidingRing"/>):
/// per such layer, a table of logical block index -> block id in that layer's own pool, holding only the blocks a
/// query at the sequence's next position can still see. Once the window has passed a whole block, its id goes back to
/// the layer's pool and is reused by the next block the layer fills, so a layer holds at most
/// ceil((window - 1) / B) + 1 blocks between chunks (plus the chunk being appended) whatever the sequence length.
/// Entries of released blocks stay in the table as -1: attention skips every block before its first query's window
/// (<see cref="Attention.BlockAttention"/>), so it never reads them. Bookkeeping only, like <see cref="BlockTable"/>.
/// </summary>
internal sealed class SlidingRings
{
    private readonly BlockPool?[] _pools;   // per layer; null for a layer that attends to everything
    private readonly int[]?[] _ids;         // per ring layer: block id per logical block index, -1 once released
    private readonly int[] _blocks;         // per ring layer: logical blocks allocated so far
    private readonly int[] _released;       // per ring layer: leading logical blocks released
    private readonly int[] _windows;

    private SlidingRings(BlockPool?[] pools, KvShape shape)
    {
        _pools = pools;
        int layers = pools.Length;
        _ids = new int[]?[layers];
        _blocks = new int[layers];
        _released = new int[layers];
        _windows = new int[layers];
        for (int l = 0; l < layers; l++)
            if (pools[l] != null)
            {
                _ids[l] = new int[8];
                _windows[l] = shape.WindowOf(l);
            }
    }

    /// <summary>The rings of a new sequence of <paramref name="cache"/>, or null when the cache keeps every token.</summary>
    public static SlidingRings? For(PagedKvCache cache) =>
        cache.RingPools is { } pools ? new SlidingRings(pools, cache.Shape) : null;

    public bool Has(int layer) => _pools[layer] != null;

    /// <summary>Block ids by logical block index (released ones -1).</summary>
    public ReadOnlySpan<int> Blocks(int layer) => _ids[layer].AsSpan(0, _blocks[layer]);

    /// <summary>Blocks the layer holds now.</summary>
    public int HeldBlocks(int layer) => _blocks[layer] - _released[layer];

    /// <summary>Makes sure the layer has blocks for its first <paramref name="slots"/> tokens.</summary>
    /// <exception cref="KvCacheFullException">The layer's pool has no free block (nothing changed for that block).</exception>
    public void Reserve(int layer, int slots)
    {
        var pool = _pools[layer]!;
        int need = (slots + pool.TokensPerBlock - 1) / pool.TokensPerBlock;
        var ids = _ids[layer]!;
        while (_blocks[layer] < need)
        {
            if (_blocks[layer] == ids.Length) Array.Resize(ref _ids[layer], ids.Length * 2);
            ids = _ids[layer]!;
            ids[_blocks[layer]] = pool.Allocate();
            _blocks[layer]++;
        }
    }

    /// <summary>
    /// The sequence is <paramref name="length"/> tokens long: its next query (position length) sees tokens from
    /// length + 1 - window on, so every block ending at or before that token goes back to its layer's pool.
    /// </summary>
    public void Release(int length)
    {
        for (int l = 0; l < _pools.Length; l++)
        {
            var pool = _pools[l];
            if (pool == null) continue;
            int firstSeen = Math.Max(0, length + 1 - _windows[l]);
            int upTo = Math.Min(_blocks[l], firstSeen / pool.TokensPerBlock);
            var ids = _ids[l]!;
            for (int b = _released[l]; b < upTo; b++)
            {
                pool.Release(ids[b]);
                ids[b] = -1;
            }
            _released[l] = Math.Max(_released[l], upTo);
        }
    }

    /// <summary>Every block back to its pool (the sequence is gone).</summary>
    public void ReleaseAll()
    {
        for (int l = 0; l < _pools.Length; l++)
        {
            var pool = _pools[l];
            if (pool == null) continue;
            var ids = _ids[l]!;
            for (int b = _released[l]; b < _blocks[l]; b++) pool.Release(ids[b]);
            _released[l] = _blocks[l] = 0;
        }
    }
}
