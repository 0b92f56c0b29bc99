using Kvq.Cuda.Model;

namespace Kvq.Cuda.Distributed;

/// <summary>
/// How one attention call of a sharded sequence (<see cref="ShardedKvSequence"/>) is cut into split-K ranges, per
/// shard (host arithmetic only). The unsharded sequence would cut its <c>count</c> tokens into the splits of
/// <see cref="AttentionSplit.For"/> (equal ranges of <c>per</c> tokens) and merge them in order (model.cu attn_merge).
/// When every shard boundary below <c>count</c> is a multiple of <c>per</c> (<see cref="Aligned"/>), each shard runs
/// exactly the unsharded splits that fall in its range, over the same stored bytes, so its partial states are the
/// unsharded ones bit for bit; shard_merge then merges all shards' splits in the same order with attn_merge's
/// arithmetic, and the output equals the unsharded output bit for bit. Otherwise each shard takes its own plan over
/// its tokens (a full shard before the newest tokens: whole tiles that end at its last token) and the result equals
/// the unsharded one up to f32 reassociation (another split placement).
/// <para>Every shard attends all query rows of the call at once (rows before a shard's first position see none of
/// its tokens: empty states); the partials of all shards share one buffer [shard][row][<see cref="Stride"/>][head dim
/// + 2], the layout an in-place all-gather of equal parts leaves, so every rank computes the same plan from the
/// sequence's length alone.</para>
/// </summary>
internal sealed class ShardSplitPlan
{
    /// <summary>Per shard: the split plan (its <see cref="AttentionSplit.Stride"/> is <see cref="Stride"/>), or null for a
    /// shard that holds none of the first <c>count</c> tokens (it writes nothing; its part stays empty).</summary>
    public AttentionSplit?[] Splits { get; }
    /// <summary>Per shard: the count the kernels take, the sequence's count less the shard's first position (row t of n
    /// sees the shard's tokens before count - n + t + 1).</summary>
    public long[] Counts { get; }
    /// <summary>Split slots per (shard, query row) in the shared partials: the most splits of any shard.</summary>
    public int Stride { get; }
    /// <summary>The shards run the unsharded splits (the output is the unsharded output bit for bit).</summary>
    public bool Aligned { get; }
    /// <summary>The unsharded sequence's split plan for the same call.</summary>
    public AttentionSplit Unsharded { get; }

    private ShardSplitPlan(AttentionSplit?[] splits, long[] counts, int stride, bool aligned, AttentionSplit unsharded)
    {
        Splits = splits;
        Counts = counts;
        Stride = stride;
        Aligned = aligned;
        Unsharded = unsharded;
    }

    /// <summary>The plan of an attention call of <paramref name="rows"/> query rows (the newest tokens) over the first
    /// <paramref name="count"/> tokens of a sequence cut by <paramref name="layout"/>, on a device of
    /// <paramref name="multiprocessors"/> SMs (<paramref name="maxStates"/>: <see cref="CudaKvSequence.MaxSplitStates"/>).
    /// <paramref name="unshardedSplits"/>: take the unsharded splits where aligned (checking mode: all shards share one
    /// GPU, and the output is the unsharded one bit for bit); false: always a plan per shard, each filling its own GPU
    /// (N GPUs: the unsharded plan's share of splits would leave most of each GPU idle).</summary>
    public static ShardSplitPlan For(ShardLayout layout, long count, int rows, int kvHeads, int multiprocessors, int maxStates,
        bool unshardedSplits = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        if (count < rows || count > layout.Total)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"attention of {rows} rows over {count} tokens of {layout}");
        var whole = AttentionSplit.For(count, rows, kvHeads, multiprocessors, maxStates);
        bool aligned = unshardedSplits;
        for (int s = 1; s < layout.Shards; s++)
            if (layout.First[s] < count && layout.First[s] % whole.PerSplit != 0) aligned = false;
        var splits = new AttentionSplit?[layout.Shards];
        var counts = new long[layout.Shards];
        int stride = 1;
        for (int s = 0; s < layout.Shards; s++)
        {
            counts[s] = count - layout.First[s];
            if (counts[s] <= 0) continue;
            long held = Math.Min(layout.Capacity[s], counts[s]);
            bool later = count > layout.First[s] + layout.Capacity[s];   // a later shard holds tokens: this one is full
            AttentionSplit split = aligned
                ? new AttentionSplit((int)((held + whole.PerSplit - 1) / whole.PerSplit), whole.PerSplit)
                : later ? Whole(layout.Capacity[s], rows, kvHeads, multiprocessors, maxStates)
                : AttentionSplit.For(held, rows, kvHeads, multiprocessors, maxStates);
            splits[s] = split;
            stride = Math.Max(stride, split.Splits);
        }
        for (int s = 0; s < splits.Length; s++)
            if (splits[s] is { } sp) splits[s] = sp with { Stride = stride };
        return new ShardSplitPlan(splits, counts, stride, aligned, whole);
    }

    /// <summary>Split slots times query rows that one shard's part can need for calls of at most
    /// <paramref name="maxRows"/> rows: the plans never ask for more (<see cref="AttentionSplit.For"/> wants about 4
    /// blocks per SM over rows x KV heads, and caps rows x splits at <paramref name="maxStates"/>).</summary>
    public static int SlotsPerPart(int maxRows, int kvHeads, int multiprocessors, int maxStates) =>
        Math.Max(maxRows, Math.Min(maxStates, multiprocessors * 4 / Math.Max(1, kvHeads)));

    /// <summary>A split plan over exactly <paramref name="tokens"/> tokens (whole blocks): splits of equal whole 128-token
    /// tiles that end at the last token, as many as <see cref="AttentionSplit.For"/> wants, rounded to a divisor of the
    /// tiles.</summary>
    internal static AttentionSplit Whole(int tokens, int rows, int kvHeads, int multiprocessors, int maxStates)
    {
        int tiles = tokens / 128;
        var want = AttentionSplit.For(tokens, rows, kvHeads, multiprocessors, maxStates);
        int per = (tiles + want.Splits - 1) / want.Splits;
        while (tiles % per != 0) per++;
        return new AttentionSplit(tiles / per, per * 128);
    }

    public override string ToString() =>
        $"{(Aligned ? "aligned" : "unaligned")} to the unsharded {Unsharded.Splits} x {Unsharded.PerSplit}: " +
        string.Join(", ", Splits.Select(s => s is { } x ? $"{x.Splits} x {x.PerSplit}" : "-"));
}
