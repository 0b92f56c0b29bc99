using Kvq.Cache;
using Kvq.Cache.Layout;
using Kvq.Cache.Policies;

namespace Kvq.Serving;

/// <summary>
/// The engine's one KV cache, sized from a byte budget: the budget is split once into what running sequences keep
/// outside blocks (staging of recent tokens for whole-block formats, exact sink copies: <see cref="BytesPerSequence"/>
/// for each of at most <see cref="MaxRunning"/> sequences), the fixed bank of cached prefixes' sink copies, and a
/// block pool of <see cref="Blocks"/> blocks (the arenas never grow past it, cached prefixes included). So the bytes
/// allocated never pass the budget, whatever runs.
/// </summary>
public sealed class KvPool
{
    public PagedKvCache Cache { get; }
    public long BudgetBytes { get; }
    /// <summary>Blocks in the pool (all layers and heads, keys and values).</summary>
    public int Blocks { get; }
    /// <summary>Bytes of one block: every layer and KV head, keys and values, plus the reserve for sparse outlier rows
    /// beside it (<see cref="KvLayoutPlan.OutlierReservePerBlock"/>; 0 for formats without them).</summary>
    public long BytesPerBlock { get; }
    /// <summary>Bytes a running sequence keeps outside blocks (staging, sinks).</summary>
    public long BytesPerSequence { get; }
    /// <summary>Sequences that may run at once: the engine's limit, lowered where their outside-block bytes would take
    /// more than half the budget (KIVI's f16 window of recent tokens, say).</summary>
    public int MaxRunning { get; }
    public int BlockTokens => Cache.Config.BlockTokens;
    /// <summary>Bytes reserved for the sink copies of cached prefixes (0 without sink tokens).</summary>
    public long SinkBankBytes { get; }

    private readonly int _policyChunk;

    /// <param name="policyChunk">Under a token policy: the tokens appended at most before the policy runs (the engine's
    /// prompt chunk), part of a sequence's peak.</param>
    public KvPool(KvShape shape, KvCacheConfig config, long budgetBytes, int maxRunning = 64, int policyChunk = 64)
    {
        _policyChunk = policyChunk;
        var plan = KvLayoutPlan.Build(shape, config);
        // KVQuant's exact outliers live beside blocks (their number depends on the text): each block's share of the
        // budget includes a reserve for them, so the arenas plus the sparse rows stay within the budget.
        BytesPerBlock = plan.BytesPerBlock + plan.OutlierReservePerBlock;
        BytesPerSequence = plan.BytesPerSequence;
        SinkBankBytes = plan.SinkBankBytes;
        MaxRunning = BytesPerSequence == 0 ? maxRunning : (int)Math.Clamp(budgetBytes / 2 / BytesPerSequence, 1, maxRunning);
        long blocks = (budgetBytes - SinkBankBytes - MaxRunning * BytesPerSequence) / BytesPerBlock;
        if (blocks < 1)
            throw new EngineRequestException($"a KV budget of {Bytes.Format(budgetBytes)} holds no sequence of {config.Name}: one block is " +
                                             $"{Bytes.Format(BytesPerBlock)} ({config.BlockTokens} tokens) and a sequence keeps " +
                                             $"{Bytes.Format(BytesPerSequence)} outside blocks", "kv_budget_exceeded", "kv_budget");
        blocks = Math.Min(blocks, int.MaxValue / 2);
        // The cache counts the pool's tokens in 32 bits: a budget past that is refused here, by name, rather than
        // overflowing below (callers map the code to their own option, e.g. the CLI's --kv-budget).
        if (blocks > int.MaxValue / config.BlockTokens)
            throw new EngineRequestException($"a KV budget of {Bytes.Format(budgetBytes)} is too large: the pool counts its " +
                                             $"{config.BlockTokens}-token blocks' tokens in 32 bits", BudgetTooLargeCode, "kv_budget");
        Blocks = (int)blocks;
        BudgetBytes = budgetBytes;
        Cache = new PagedKvCache(plan, checked(Blocks * config.BlockTokens));
    }

    /// <summary>The <see cref="EngineRequestException.Code"/> of a budget whose tokens the pool cannot count.</summary>
    public const string BudgetTooLargeCode = "kv_budget_too_large";

    /// <summary>Whether sequences run under a token policy: each layer then draws blocks from a pool of its own (all
    /// of <see cref="Blocks"/> blocks), a prefix is shared as the policy's state after it
    /// (<see cref="PagedKvCache.SharePolicyPrefixes"/>), and preemption recomputes.</summary>
    public bool HasPolicy => Cache.LayerPools != null;

    /// <summary>
    /// The most slots a layer of a sequence growing to <paramref name="tokens"/> tokens holds at once: the tokens
    /// themselves, or under a token policy its budget at that length plus one chunk (<see cref="KvPolicyConfig.PeakSlots"/>),
    /// never more than the tokens.
    /// </summary>
    public int SlotCap(long tokens) => Cache.Config.Policy is { } p
        ? p.PeakSlots((int)Math.Min(tokens, int.MaxValue), _policyChunk, Cache.Shape.Layers, Cache.Config.SinkTokens)
        : (int)Math.Min(tokens, int.MaxValue);

    /// <summary>Blocks (in every layer) a sequence growing to <paramref name="tokens"/> tokens holds at its peak.</summary>
    public int PeakBlocks(long tokens) => BlocksFor(SlotCap(tokens));

    /// <summary>Blocks a sequence of <paramref name="tokens"/> tokens takes, counted from empty.</summary>
    public int BlocksFor(long tokens) => (int)((tokens + BlockTokens - 1) / BlockTokens);

    /// <summary>Blocks the pool can still hand out: free (cached ones included: reusing one evicts its prefix). Under a
    /// token policy, the fewest any layer's pool has left.</summary>
    public int FreeBlocks
    {
        get
        {
            if (Cache.LayerPools is not { } pools) return Cache.Sequences.Pool.FreeBlockCount;
            int free = int.MaxValue;
            foreach (var p in pools) free = Math.Min(free, p.FreeBlockCount);
            return free;
        }
    }

    /// <summary>Blocks held by sequences (a shared block once). Under a token policy, the most any layer holds.</summary>
    public int HeldBlocks
    {
        get
        {
            if (Cache.LayerPools is not { } pools) return Cache.Sequences.Pool.HeldBlockCount;
            int held = 0;
            foreach (var p in pools) held = Math.Max(held, p.HeldBlockCount);
            return held;
        }
    }

    /// <summary>Bytes the <paramref name="running"/> sequences hold: their blocks (a shared block once, each layer's own
    /// under a token policy) and what they keep outside blocks (staging, sink copies: <see cref="BytesPerSequence"/>
    /// each). Cached prefixes that no sequence references are not held (<see cref="BytesCached"/>); nor are the blocks
    /// admission set aside for tokens not appended yet (the decode reserve), which stay free.</summary>
    public long BytesHeld(int running) => Cache.HeldBytes + running * BytesPerSequence;

    /// <summary>What the <paramref name="running"/> sequences would hold if nothing were shared: <see cref="BytesHeld"/>
    /// plus, for every reference to a shared block beyond its first, that block's bytes (its sparse outlier rows once).
    /// Without forks or prefix hits, equal to <see cref="BytesHeld"/>.</summary>
    public long BytesUnshared(int running) => BytesHeld(running) + Cache.SharedReferenceBytes;

    /// <summary>Bytes of cached prefixes no running sequence references (free, reused least recently released first);
    /// block bytes only.</summary>
    public long BytesCached => Cache.CachedBytes;

    /// <summary>Bytes allocated right now: block arenas (never past <see cref="Blocks"/>), the running sequences'
    /// outside-block bytes and the sink bank.</summary>
    public long BytesInUse(int running) => Cache.AllocatedBytes + running * BytesPerSequence + SinkBankBytes;
}
