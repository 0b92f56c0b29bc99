namespace Kvq.Cache.Paging;

/// <summary>
/// The fixed set of physical KV blocks (ids 0..BlockCount-1, each TokensPerBlock tokens) and who holds them: a
/// reference count per block and an O(1) LRU free list. Holds no tensors; the storage layer owns the bytes.
/// <para>
/// A block at refcount 0 is free. If it is registered in <see cref="Prefixes"/> (a full block with a known prefix
/// hash) it stays "cached": it goes to the back of the free list and keeps its content until the pool hands it out
/// again, so a later prompt with the same prefix can revive it through <see cref="AddRef"/>. Free blocks with nothing
/// worth keeping go to the front and are reused first; cached blocks are therefore evicted least recently released
/// first, and only when no plain free block is left. The index holds no references of its own (as in vLLM v1):
/// refcount == number of block-table entries naming the block.
/// </para>
/// </summary>
public sealed class BlockPool
{
    private readonly int[] _refCounts; // indexed by block id
    private readonly FreeBlockList _free;

    public int BlockCount { get; }
    public int TokensPerBlock { get; }
    /// <summary>Chained hashes of full blocks, for prefix sharing. Evictions here drop entries there.</summary>
    public PrefixIndex Prefixes { get; }

    /// <summary>Blocks at refcount 0, cached ones included: what <see cref="Allocate()"/> can still hand out.</summary>
    public int FreeBlockCount => _free.Count;
    /// <summary>Free blocks still registered in <see cref="Prefixes"/>: revivable by a prefix hit until reused.</summary>
    public int CachedFreeBlockCount { get; private set; }
    /// <summary>Blocks at refcount 1 or more; their bytes are what the cache holds for live sequences.</summary>
    public int HeldBlockCount => BlockCount - _free.Count;
    /// <summary>Blocks at refcount 2 or more (held by several block tables, stored once).</summary>
    public int SharedBlockCount { get; private set; }
    /// <summary>Sum of all refcounts: the blocks the live tables would hold if nothing were shared.</summary>
    public int ReferenceCount { get; private set; }
    /// <summary>Cached blocks reused for new content since creation (prefix entries lost to memory pressure).</summary>
    public long EvictionCount { get; private set; }

    /// <summary>Raised when a cached block is reused for new content (its prefix entry dropped): the storage layer
    /// drops what it kept beside the block.</summary>
    public event Action<int>? Evicted;

    /// <summary>Raised when a cached block is about to be reused for new content, while its content and prefix hash
    /// are still there (before <see cref="Evicted"/>): a host tier may copy it out.</summary>
    public event Action<int, BlockHash>? Evicting;

    /// <summary>Raised when a block becomes free with nothing worth keeping (released and not a cached prefix, or a
    /// free block unregistered): the storage layer may drop what it kept beside the block (sparse outlier rows).</summary>
    public event Action<int>? Freed;

    public PoolBlockUsage Usage =>
        new(BlockCount, HeldBlockCount, SharedBlockCount, ReferenceCount, CachedFreeBlockCount, FreeBlockCount);

    public BlockPool(int blockCount, int tokensPerBlock)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokensPerBlock);
        BlockCount = blockCount;
        TokensPerBlock = tokensPerBlock;
        _refCounts = new int[blockCount];
        _free = new FreeBlockList(blockCount);
        // Ascending ids at start so that a fresh pool hands out 0, 1, 2, ... (readable traces, deterministic tests).
        for (int id = 0; id < blockCount; id++) _free.PushBack(id);
        Prefixes = new PrefixIndex(this);
    }

    public int RefCount(int blockId) => _refCounts[CheckId(blockId)];

    public bool IsFree(int blockId) => _refCounts[CheckId(blockId)] == 0;

    /// <summary>Takes the front of the free list (evicting its cached prefix, if any) at refcount 1.</summary>
    /// <exception cref="KvCacheFullException">No block is free.</exception>
    public int Allocate()
    {
        if (_free.Count == 0) throw Full(1);
        int id = _free.PopFront();
        if (Prefixes.IsRegistered(id))
        {
            // Its content is about to be overwritten, so no prompt may find it any more (a host tier may keep a copy).
            if (Evicting != null && Prefixes.TryGetHash(id, out var hash)) Evicting(id, hash);
            Prefixes.Forget(id);
            CachedFreeBlockCount--;
            EvictionCount++;
            Evicted?.Invoke(id);
        }
        _refCounts[id] = 1;
        ReferenceCount++;
        return id;
    }

    /// <summary>Allocates <c>blockIds.Length</c> blocks, all or none.</summary>
    /// <exception cref="KvCacheFullException">Fewer blocks are free than asked for; nothing was allocated.</exception>
    public void Allocate(Span<int> blockIds)
    {
        if (blockIds.Length > _free.Count) throw Full(blockIds.Length);
        for (int i = 0; i < blockIds.Length; i++) blockIds[i] = Allocate();
    }

    /// <summary>
    /// One more holder of a block: a fork, or a prefix hit. A free block may only be revived if it is still cached
    /// (registered); a plain free block holds stale data and must be allocated instead.
    /// </summary>
    public void AddRef(int blockId)
    {
        int rc = _refCounts[CheckId(blockId)];
        if (rc == 0)
        {
            if (!Prefixes.IsRegistered(blockId))
                throw new InvalidOperationException(
                    $"block {blockId} is free and caches no prefix; allocate a block instead of reviving it");
            _free.Remove(blockId);
            CachedFreeBlockCount--;
        }
        else if (rc == 1)
        {
            SharedBlockCount++;
        }
        _refCounts[blockId] = rc + 1;
        ReferenceCount++;
    }

    /// <summary>One holder fewer. At zero the block becomes free: cached at the back if registered, else at the front.</summary>
    public void Release(int blockId)
    {
        int rc = _refCounts[CheckId(blockId)];
        if (rc == 0) throw new InvalidOperationException($"block {blockId} released while free (double release)");
        _refCounts[blockId] = rc - 1;
        ReferenceCount--;
        if (rc == 2) SharedBlockCount--;
        if (rc != 1) return;
        if (Prefixes.IsRegistered(blockId))
        {
            _free.PushBack(blockId);
            CachedFreeBlockCount++;
        }
        else
        {
            _free.PushFront(blockId);
            Freed?.Invoke(blockId);
        }
    }

    /// <summary>Drops a block's prefix entry (its side data is gone, so no prompt may find it): a cached free block
    /// becomes a plain free one, reused first. No-op for an unregistered block.</summary>
    public void Unregister(int blockId)
    {
        if (!Prefixes.IsRegistered(CheckId(blockId))) return;
        Prefixes.Forget(blockId);
        if (_refCounts[blockId] != 0) return;
        _free.Remove(blockId);
        _free.PushFront(blockId);
        CachedFreeBlockCount--;
        Freed?.Invoke(blockId);
    }

    /// <summary>Writes the free list front (next reused) to back (last evicted) into <paramref name="destination"/>;
    /// returns how many ids were written. For tests and diagnostics.</summary>
    internal int CopyFreeList(Span<int> destination)
    {
        int n = 0;
        for (int id = _free.First; id >= 0 && n < destination.Length; id = _free.Next(id)) destination[n++] = id;
        return n;
    }

    internal FreeBlockList FreeList => _free;

    internal KvCacheFullException Full(int requestedBlocks) =>
        new(requestedBlocks, _free.Count, BlockCount, TokensPerBlock);

    private int CheckId(int blockId)
    {
        if ((uint)blockId >= (uint)BlockCount)
            throw new ArgumentOutOfRangeException(nameof(blockId), blockId, $"block id must be in 0..{BlockCount - 1}");
        return blockId;
    }
}
