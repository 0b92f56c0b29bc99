namespace Kvq.Cache.Paging;

/// <summary>
/// Which physical block holds which full-block prefix: a two-way map between <see cref="BlockHash"/> (chained over
/// all tokens up to the block's end) and block id. A block enters when it becomes full and leaves when the pool
/// reuses it (eviction) or its holder overwrites it. The map holds no references: a registered block may be free
/// (cached) or held. One hash maps to one block; a second block with the same content stays unregistered, so block
/// tables never change ids behind a sequence's back.
/// </summary>
public sealed class PrefixIndex
{
    private readonly BlockPool _pool;
    private readonly Dictionary<BlockHash, int> _blockByHash;
    private readonly BlockHash[] _hashByBlock;   // valid where _registered is set; indexed by block id
    private readonly bool[] _registered;

    internal PrefixIndex(BlockPool pool)
    {
        _pool = pool;
        // Sized for every block at once, so registering never grows the table (no allocation per operation).
        _blockByHash = new Dictionary<BlockHash, int>(pool.BlockCount);
        _hashByBlock = new BlockHash[pool.BlockCount];
        _registered = new bool[pool.BlockCount];
    }

    /// <summary>Registered blocks, held and cached-free alike.</summary>
    public int Count => _blockByHash.Count;

    public bool IsRegistered(int blockId) => _registered[blockId];

    public bool TryGetHash(int blockId, out BlockHash hash)
    {
        hash = _hashByBlock[blockId];
        return _registered[blockId];
    }

    public bool TryGetBlock(BlockHash hash, out int blockId) => _blockByHash.TryGetValue(hash, out blockId);

    /// <summary>
    /// Records that held block <paramref name="blockId"/> is full and its chained hash is <paramref name="hash"/>.
    /// Returns false (and records nothing) when another block already holds that prefix.
    /// </summary>
    public bool TryRegister(int blockId, BlockHash hash)
    {
        if (_pool.RefCount(blockId) == 0)
            throw new InvalidOperationException($"block {blockId} is free; only a held, full block can be registered");
        if (_registered[blockId])
            throw new InvalidOperationException(
                $"block {blockId} is already registered as {_hashByBlock[blockId]}; its content must not change");
        if (!_blockByHash.TryAdd(hash, blockId)) return false;
        _hashByBlock[blockId] = hash;
        _registered[blockId] = true;
        return true;
    }

    /// <summary>How many leading full blocks of <paramref name="tokens"/> are cached (held or free). Takes nothing.</summary>
    public int CountCachedBlocks(ReadOnlySpan<int> tokens) => Walk(tokens, default, default, int.MaxValue, acquire: false);

    /// <summary>
    /// Finds the longest run of leading full blocks of <paramref name="tokens"/> that are cached and takes one
    /// reference on each (reviving free ones). Writes their ids and chained hashes; returns the count, in blocks.
    /// At most <c>min(blockIds.Length, hashes.Length)</c> blocks are taken, so the caller caps the hit by slicing.
    /// The caller owns the references and hands them to a block table (or releases them).
    /// </summary>
    public int AcquirePrefix(ReadOnlySpan<int> tokens, Span<int> blockIds, Span<BlockHash> hashes) =>
        Walk(tokens, blockIds, hashes, Math.Min(blockIds.Length, hashes.Length), acquire: true);

    /// <summary>Drops a block's entry because its content is being replaced. No-op if it has none.</summary>
    internal void Forget(int blockId)
    {
        if (!_registered[blockId]) return;
        _blockByHash.Remove(_hashByBlock[blockId]);
        _registered[blockId] = false;
        _hashByBlock[blockId] = default;
    }

    private int Walk(ReadOnlySpan<int> tokens, Span<int> blockIds, Span<BlockHash> hashes, int maxBlocks, bool acquire)
    {
        int b = _pool.TokensPerBlock;
        int limit = Math.Min(tokens.Length / b, maxBlocks);
        var parent = BlockHash.Root;
        int found = 0;
        while (found < limit)
        {
            var hash = BlockHash.Of(parent, tokens.Slice(found * b, b));
            if (!_blockByHash.TryGetValue(hash, out int id)) break;
            if (acquire)
            {
                _pool.AddRef(id);
                blockIds[found] = id;
                hashes[found] = hash;
            }
            parent = hash;
            found++;
        }
        return found;
    }
}
