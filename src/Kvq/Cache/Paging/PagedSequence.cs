using System.Runtime.InteropServices;

namespace Kvq.Cache.Paging;

/// <summary>
/// One live sequence: its block table, the token ids it holds and the chained hash of each of its full blocks.
/// Token ids are kept (4 bytes a token, next to kilobytes of K/V) because a block is hashed when it fills, which after
/// a truncate into a full block means rehashing tokens appended long ago.
/// </summary>
internal sealed class PagedSequence
{
    private readonly BlockPool _pool;
    private readonly List<int> _tokens;        // by token index
    private readonly List<BlockHash> _hashes;  // by block index; one per full block

    public BlockTable Table { get; }
    public ReadOnlySpan<int> Tokens => CollectionsMarshal.AsSpan(_tokens);

    private PagedSequence(BlockPool pool, BlockTable table, List<int> tokens, List<BlockHash> hashes)
    {
        _pool = pool;
        Table = table;
        _tokens = tokens;
        _hashes = hashes;
    }

    /// <summary>
    /// A sequence that starts with the cached blocks of <paramref name="prompt"/>'s longest cached prefix. At most
    /// prompt.Length - 1 tokens are taken from the cache: the model must still run the last prompt token to get the
    /// logits of the first generated one. The caller appends prompt[CachedTokens..] itself.
    /// </summary>
    public static PagedSequence Start(BlockPool pool, ReadOnlySpan<int> prompt)
    {
        int maxBlocks = prompt.Length == 0 ? 0 : (prompt.Length - 1) / pool.TokensPerBlock;
        var ids = new int[maxBlocks];
        var hashes = new BlockHash[maxBlocks];
        int hit = pool.Prefixes.AcquirePrefix(prompt, ids, hashes);
        var table = new BlockTable(pool);
        table.AdoptFullBlocks(ids.AsSpan(0, hit));
        var tokenList = new List<int>(prompt.Length);
        tokenList.AddRange(prompt[..table.TokenCount]);
        var hashList = new List<BlockHash>(hit);
        hashList.AddRange(hashes.AsSpan(0, hit));
        return new PagedSequence(pool, table, tokenList, hashList);
    }

    /// <param name="register">Register blocks that fill up now; false when their content is written later (staging
    /// formats, sink copies), and <see cref="Register"/> publishes them once it is.</param>
    public BlockCopy? Append(ReadOnlySpan<int> tokens, Span<TokenSlot> slots, bool register = true)
    {
        var copy = Table.Append(tokens.Length, slots);
        _tokens.AddRange(tokens);
        if (register) Register(int.MaxValue);
        return copy;
    }

    /// <summary>The chained hash of the last full block hashed so far (<see cref="BlockHash.Root"/> before any): the
    /// parent of the next one.</summary>
    public BlockHash LastBlockHash => _hashes.Count == 0 ? BlockHash.Root : _hashes[^1];

    public PagedSequence Fork() =>
        new(_pool, Table.Fork(), new List<int>(_tokens), new List<BlockHash>(_hashes));

    public void Truncate(int tokenCount)
    {
        Table.Truncate(tokenCount);
        _tokens.RemoveRange(tokenCount, _tokens.Count - tokenCount);
        int fullBlocks = tokenCount / _pool.TokensPerBlock;
        _hashes.RemoveRange(fullBlocks, _hashes.Count - fullBlocks);
    }

    public void Free() => Truncate(0);

    /// <summary>Every full block within the first <paramref name="tokenCount"/> tokens not registered yet gets its
    /// chained hash and, unless another block already holds the same prefix, an index entry later prompts can hit.</summary>
    public void Register(int tokenCount)
    {
        int b = _pool.TokensPerBlock;
        int fullBlocks = Math.Min(Table.TokenCount, tokenCount) / b;
        var tokens = CollectionsMarshal.AsSpan(_tokens);
        for (int i = _hashes.Count; i < fullBlocks; i++)
        {
            var parent = i == 0 ? BlockHash.Root : _hashes[i - 1];
            var hash = BlockHash.Of(parent, tokens.Slice(i * b, b));
            _hashes.Add(hash);
            _pool.Prefixes.TryRegister(Table[i], hash);
        }
    }
}
