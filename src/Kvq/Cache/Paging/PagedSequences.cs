namespace Kvq.Cache.Paging;

/// <summary>
/// The paged-cache bookkeeping as a caller sees it: live sequences by id, each with a block table over one shared
/// <see cref="BlockPool"/>, and prefix sharing through the pool's <see cref="PrefixIndex"/>. It answers "which slot
/// does this token go to" and "what must be copied first"; it never touches K/V data. Not thread-safe: the engine's
/// scheduler owns it.
/// </summary>
public sealed class PagedSequences
{
    private readonly Dictionary<int, PagedSequence> _live = new();
    private int _nextId;

    public BlockPool Pool { get; }
    /// <summary>Live sequences.</summary>
    public int Count => _live.Count;

    public PagedSequences(BlockPool pool) => Pool = pool;

    public PagedSequences(int blockCount, int tokensPerBlock) : this(new BlockPool(blockCount, tokensPerBlock)) { }

    /// <summary>
    /// Starts a sequence for <paramref name="prompt"/>, reusing the cached blocks of its longest cached prefix.
    /// <paramref name="cachedTokens"/> (a multiple of the block size, below prompt.Length) tokens are already in the
    /// cache; the caller runs the model on prompt[cachedTokens..] and places them with <see cref="Append"/>.
    /// Needs no fresh block, so it cannot run out of memory.
    /// </summary>
    public int Create(ReadOnlySpan<int> prompt, out int cachedTokens)
    {
        var seq = PagedSequence.Start(Pool, prompt);
        cachedTokens = seq.Table.TokenCount;
        int id = _nextId++;
        _live.Add(id, seq);
        return id;
    }

    /// <summary>
    /// Places <paramref name="tokens"/> after the sequence's last token, writing one slot per token to
    /// <paramref name="slots"/>. Blocks that fill up are registered for prefix sharing. Returns the copy the storage
    /// layer must do before writing the slots, when the partial last block was shared.
    /// </summary>
    /// <exception cref="KvCacheFullException">Not enough blocks; nothing changed.</exception>
    /// <param name="register">False when the blocks' content is written later (see <see cref="Register"/>).</param>
    public BlockCopy? Append(int sequenceId, ReadOnlySpan<int> tokens, Span<TokenSlot> slots, bool register = true) =>
        Get(sequenceId).Append(tokens, slots, register);

    /// <summary><see cref="Append(int, ReadOnlySpan{int}, Span{TokenSlot}, bool)"/> without the slots (storage that
    /// addresses tokens by their index in the sequence).</summary>
    public BlockCopy? Append(int sequenceId, ReadOnlySpan<int> tokens, bool register = true) =>
        Get(sequenceId).Append(tokens, default, register);

    /// <summary>Registers the full blocks within the sequence's first <paramref name="tokenCount"/> tokens for prefix
    /// sharing: the storage layer calls this once their content is final (a staging format seals blocks late).</summary>
    public void Register(int sequenceId, int tokenCount) => Get(sequenceId).Register(tokenCount);

    /// <summary>A new sequence sharing all of this one's blocks (beam search, parallel sampling). Returns its id.</summary>
    public int Fork(int sequenceId)
    {
        var child = Get(sequenceId).Fork();
        int id = _nextId++;
        _live.Add(id, child);
        return id;
    }

    /// <summary>Keeps the first <paramref name="tokenCount"/> tokens (rollback of rejected draft tokens, say).</summary>
    public void Truncate(int sequenceId, int tokenCount) => Get(sequenceId).Truncate(tokenCount);

    /// <summary>Releases the sequence's blocks; full registered ones stay cached until the pool needs them.</summary>
    public void Free(int sequenceId)
    {
        Get(sequenceId).Free();
        _live.Remove(sequenceId);
    }

    public bool IsLive(int sequenceId) => _live.ContainsKey(sequenceId);

    /// <summary>Ids of the live sequences (for accounting checks and diagnostics; do not create or free while
    /// enumerating).</summary>
    public IEnumerable<int> LiveIds => _live.Keys;

    public int TokenCount(int sequenceId) => Get(sequenceId).Table.TokenCount;

    /// <summary>Physical block id of each logical block, in order.</summary>
    public ReadOnlySpan<int> BlockIds(int sequenceId) => Get(sequenceId).Table.BlockIds;

    public ReadOnlySpan<int> TokenIds(int sequenceId) => Get(sequenceId).Tokens;

    /// <summary>The chained hash of the sequence's last hashed full block (the root before any).</summary>
    public BlockHash LastBlockHash(int sequenceId) => Get(sequenceId).LastBlockHash;

    /// <summary>Blocks an append of <paramref name="tokens"/> tokens would take from the pool (admission checks).</summary>
    public int BlocksNeededToAppend(int sequenceId, int tokens) => Get(sequenceId).Table.BlocksNeededToAppend(tokens);

    public SequenceBlockUsage Usage(int sequenceId)
    {
        var table = Get(sequenceId).Table;
        var ids = table.BlockIds;
        int exclusive = 0;
        for (int i = 0; i < ids.Length; i++)
            if (Pool.RefCount(ids[i]) == 1) exclusive++;
        return new SequenceBlockUsage(table.TokenCount, ids.Length, exclusive, ids.Length - exclusive);
    }

    private PagedSequence Get(int sequenceId) =>
        _live.TryGetValue(sequenceId, out var seq) ? seq
            : throw new KeyNotFoundException($"sequence {sequenceId} is not live (never created, or freed)");
}
