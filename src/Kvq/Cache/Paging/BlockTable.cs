namespace Kvq.Cache.Paging;

/// <summary>
/// One sequence's logical-to-physical map: entry i is the block id holding tokens [i*B, (i+1)*B), B = tokens per
/// block. Append-only except for <see cref="Truncate"/>: ids of blocks already written never change, so attention
/// kernels may keep a copy of the table between steps. The table owns one pool reference per entry.
/// <para>
/// A full block may be shared (fork, prefix hit). The only block ever written is the last, partial one; if that
/// block is shared, or registered in the prefix index (its content is someone's cached prefix), writing in place
/// would corrupt another reader. Then: shared means copy-on-write into a fresh block (reported as a
/// <see cref="BlockCopy"/>); held only here but registered means the registration is dropped before writing.
/// </para>
/// </summary>
public sealed class BlockTable
{
    private readonly BlockPool _pool;
    private int[] _blockIds;

    public BlockTable(BlockPool pool) : this(pool, new int[4]) { }

    private BlockTable(BlockPool pool, int[] blockIds)
    {
        _pool = pool;
        _blockIds = blockIds;
    }

    /// <summary>Tokens present, in tokens.</summary>
    public int TokenCount { get; private set; }
    /// <summary>Entries, in blocks: ceil(TokenCount / TokensPerBlock).</summary>
    public int BlockCount { get; private set; }
    public ReadOnlySpan<int> BlockIds => _blockIds.AsSpan(0, BlockCount);
    public int this[int blockIndex] => BlockIds[blockIndex];

    /// <summary>Blocks the pool must supply for <paramref name="tokens"/> more tokens: new blocks, plus one when the
    /// partial last block is shared and must be copied first.</summary>
    public int BlocksNeededToAppend(int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        if (tokens == 0) return 0;
        int b = _pool.TokensPerBlock;
        int newBlocks = (TokenCount + tokens + b - 1) / b - BlockCount;
        bool copy = TokenCount % b != 0 && _pool.RefCount(_blockIds[BlockCount - 1]) > 1;
        return newBlocks + (copy ? 1 : 0);
    }

    /// <summary>
    /// Reserves slots for <paramref name="tokens"/> more tokens and writes them to <paramref name="slots"/> (unless empty:
    /// storage that addresses tokens by index needs no slots). Returns the copy the storage layer must perform before
    /// writing those slots, if the last block had to be copied.
    /// </summary>
    /// <exception cref="KvCacheFullException">Not enough free blocks; the table and pool are unchanged.</exception>
    public BlockCopy? Append(int tokens, Span<TokenSlot> slots)
    {
        if (!slots.IsEmpty && slots.Length < tokens)
            throw new ArgumentException($"{slots.Length} slots given for {tokens} tokens", nameof(slots));
        int needed = BlocksNeededToAppend(tokens);
        if (needed > _pool.FreeBlockCount) throw _pool.Full(needed);
        if (tokens == 0) return null;

        int b = _pool.TokensPerBlock;
        int offset = TokenCount % b;
        BlockCopy? copy = null;
        if (offset != 0)
        {
            int last = _blockIds[BlockCount - 1];
            if (_pool.RefCount(last) > 1)
            {
                // Allocate before releasing: the source stays held by its other holders, and a throw cannot happen
                // here anyway because the count above included this block.
                int fresh = _pool.Allocate();
                _pool.Release(last);
                _blockIds[BlockCount - 1] = fresh;
                copy = new BlockCopy(last, fresh, offset);
            }
            else
            {
                _pool.Prefixes.Forget(last);
            }
        }

        for (int i = 0; i < tokens; i++)
        {
            offset = TokenCount % b;
            if (offset == 0) Push(_pool.Allocate());
            if (!slots.IsEmpty) slots[i] = new TokenSlot(_blockIds[BlockCount - 1], offset);
            TokenCount++;
        }
        return copy;
    }

    /// <summary>
    /// Starts an empty table with blocks whose references the caller already took (a prefix hit from
    /// <see cref="PrefixIndex.AcquirePrefix"/>); all are full, so the table then holds blockIds.Length * B tokens.
    /// </summary>
    public void AdoptFullBlocks(ReadOnlySpan<int> blockIds)
    {
        if (BlockCount != 0) throw new InvalidOperationException("a table can adopt a prefix only while empty");
        for (int i = 0; i < blockIds.Length; i++)
        {
            if (_pool.RefCount(blockIds[i]) == 0)
                throw new InvalidOperationException($"block {blockIds[i]} is free; take its reference before adopting it");
            Push(blockIds[i]);
        }
        TokenCount = blockIds.Length * _pool.TokensPerBlock;
    }

    /// <summary>A new table sharing every block of this one (one more reference each). Writes diverge by
    /// copy-on-write of the partial last block.</summary>
    public BlockTable Fork()
    {
        var ids = new int[Math.Max(4, BlockCount)];
        for (int i = 0; i < BlockCount; i++)
        {
            _pool.AddRef(_blockIds[i]);
            ids[i] = _blockIds[i];
        }
        return new BlockTable(_pool, ids) { BlockCount = BlockCount, TokenCount = TokenCount };
    }

    /// <summary>Keeps the first <paramref name="tokenCount"/> tokens and releases blocks no longer needed. A block
    /// left partial keeps its id; its dropped slots are overwritten (or copied around) by later appends.</summary>
    public void Truncate(int tokenCount)
    {
        if ((uint)tokenCount > (uint)TokenCount)
            throw new ArgumentOutOfRangeException(nameof(tokenCount), tokenCount, $"table holds {TokenCount} tokens");
        int b = _pool.TokensPerBlock;
        int keep = (tokenCount + b - 1) / b;
        // Last block first: released cached blocks queue in this order, so a sequence's tail (least likely to be
        // shared by another prompt) is evicted before its head.
        while (BlockCount > keep) _pool.Release(_blockIds[--BlockCount]);
        TokenCount = tokenCount;
    }

    /// <summary>Releases every block; the table is empty afterwards and may be reused.</summary>
    public void Clear() => Truncate(0);

    private void Push(int blockId)
    {
        if (BlockCount == _blockIds.Length) Array.Resize(ref _blockIds, _blockIds.Length * 2);
        _blockIds[BlockCount++] = blockId;
    }
}
