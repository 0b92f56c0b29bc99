using Kvq.Cache;
using Kvq.Cache.Layout;

namespace Kvq.Serving;

/// <summary>
/// The engine's one KV cache, sized from a byte budget: a block pool of <see cref="Blocks"/> blocks, plus what each
/// running sequence keeps outside blocks (staging of recent tokens for whole-block formats, exact sink copies),
/// reserved as <see cref="BlocksPerSequence"/> blocks of the pool's count while the sequence runs, and, with sink
/// tokens, the fixed bank of cached prefixes' sink copies. Blocks held, blocks cached for prefix reuse and the
/// reservations together never pass the budget.
/// </summary>
public sealed class KvPool
{
    public PagedKvCache Cache { get; }
    public long BudgetBytes { get; }
    /// <summary>Blocks in the pool (all layers and heads, keys and values).</summary>
    public int Blocks { get; }
    /// <summary>Bytes of one block: every layer and KV head, keys and values.</summary>
    public long BytesPerBlock { get; }
    /// <summary>Bytes a running sequence keeps outside blocks (staging, sinks).</summary>
    public long BytesPerSequence { get; }
    /// <summary><see cref="BytesPerSequence"/> in whole blocks, reserved per running sequence.</summary>
    public int BlocksPerSequence { get; }
    public int BlockTokens => Cache.Config.BlockTokens;
    /// <summary>Bytes reserved for the sink copies of cached prefixes (0 without sink tokens).</summary>
    public long SinkBankBytes { get; }

    public KvPool(KvShape shape, KvCacheConfig config, long budgetBytes)
    {
        if (config.Policy != null)
            throw new EngineRequestException($"{config.Name}: the serving engine does not run token policies yet (each layer keeps its own " +
                                             "blocks under a policy); serve without --policy", "invalid_value", "kv");
        var plan = KvLayoutPlan.Build(shape, config);
        BytesPerBlock = plan.BytesPerBlock;
        BytesPerSequence = plan.BytesPerSequence;
        BlocksPerSequence = (int)((BytesPerSequence + BytesPerBlock - 1) / BytesPerBlock);
        SinkBankBytes = plan.SinkBankBytes;
        long blocks = (budgetBytes - SinkBankBytes) / BytesPerBlock;
        if (blocks < 1 + BlocksPerSequence)
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

    /// <summary>Bytes allocated right now: block arenas (never past <see cref="Blocks"/>) plus the reservations of
    /// <paramref name="running"/> sequences.</summary>
    /// <summary>Bytes the <paramref name="running"/> sequences hold: their blocks (a shared block once) and reservations.</summary>
    public long BytesHeld(int running) => (Cache.Sequences.Pool.HeldBlockCount + (long)running * BlocksPerSequence) * BytesPerBlock;

    public long BytesInUse(int running) => Cache.AllocatedBytes + (long)running * BlocksPerSequence * BytesPerBlock + SinkBankBytes;
}
