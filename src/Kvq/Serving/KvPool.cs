using Kvq.Cache;
using Kvq.Cache.Layout;

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

    public KvPool(KvShape shape, KvCacheConfig config, long budgetBytes, int maxRunning = 64)
    {
        if (config.Policy != null)
            throw new EngineRequestException($"{config.Name}: the serving engine does not run token policies yet (each layer keeps its own " +
                                             "blocks under a policy); serve without --policy", "invalid_value", "kv");
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
        Blocks = (int)Math.Min(blocks, int.MaxValue / 2);
        BudgetBytes = budgetBytes;
        Cache = new PagedKvCache(plan, checked(Blocks * config.BlockTokens));
    }

    /// <summary>Blocks a sequence of <paramref name="tokens"/> tokens takes, counted from empty.</summary>
    public int BlocksFor(long tokens) => (int)((tokens + BlockTokens - 1) / BlockTokens);

    /// <summary>Blocks the pool can still hand out: free (cached ones included: reusing one evicts its prefix).</summary>
    public int FreeBlocks => Cache.Sequences.Pool.FreeBlockCount;

    /// <summary>Bytes the <paramref name="running"/> sequences hold: their blocks (a shared block once) and what they
    /// keep outside blocks.</summary>
    public long BytesHeld(int running) => Cache.Sequences.Pool.HeldBlockCount * BytesPerBlock + running * BytesPerSequence;

    /// <summary>Bytes allocated right now: block arenas (never past <see cref="Blocks"/>), the running sequences'
    /// outside-block bytes and the sink bank.</summary>
    public long BytesInUse(int running) => Cache.AllocatedBytes + running * BytesPerSequence + SinkBankBytes;
}
