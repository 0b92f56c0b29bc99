using Kvq.Cache.Codecs;

namespace Kvq.Cache.Layout;

/// <summary>
/// What a KV cache of one model and one <c>--kv</c> spec stores, decided once: per side and layer the parsed spec and
/// its codecs, the bytes of a block, and the bytes at any token count, including what a sequence keeps outside blocks
/// (f16 staging for whole-block formats, exact sink copies) and the cache's bank of sink copies for shared prefixes.
/// Caches, the serving pool, <c>inspect</c>, <c>eval memory</c> and spec validation all read their bytes here.
/// </summary>
public sealed class KvLayoutPlan
{
    public KvShape Shape { get; }
    public KvCacheConfig Config { get; }
    public KvSidePlan Keys { get; }
    public KvSidePlan Values { get; }
    /// <summary>With sink tokens and no token policy: cached prefixes whose sink copies the bank keeps.</summary>
    public int SinkBankEntries { get; }

    public int BlockTokens => Config.BlockTokens;
    public int SinkTokens => Config.SinkTokens;

    private KvLayoutPlan(KvShape shape, KvCacheConfig config, int sinkBankEntries)
    {
        Shape = shape;
        Config = config;
        SinkBankEntries = sinkBankEntries;
        Keys = new KvSidePlan(KvSide.Key, KvCodecRegistry.Parse(config.KeyFormat), shape, config.BlockTokens, config.Profile);
        Values = new KvSidePlan(KvSide.Value, KvCodecRegistry.Parse(config.ValueFormat), shape, config.BlockTokens, config.Profile);
        if (Values.PreRope) throw new KvSpecException($"'{Values.Codec.Name}' is a key format (pre-RoPE) and cannot store values");
        if (config.Policy != null && config.Offload != null)
            throw new KvSpecException($"offload ({config.Offload.Name}) keeps every token and a token policy ({config.Policy.Name}) drops some: use one");
        if (config.Policy is { } policy)
            foreach (var codec in new[] { Keys.Codec, Values.Codec })
                if (!codec.CanCopySlots)
                    throw new KvSpecException(codec.EncodesWholeBlocks
                        ? $"policy '{policy.Policy.Name}' evicts single tokens, but '{codec.Name}' encodes whole blocks " +
                          "(recent tokens staged, then quantized together); use a per-token format"
                        : $"policy '{policy.Policy.Name}' moves single tokens, but '{codec.Name}' does not describe its per-token " +
                          "layout (KvCodec.TokenSections)");
        if (config.SlidingRing && RingConflict() is { } conflict)
            throw new KvSpecException($"{config.Name}: sliding-window rings (--sliding ring) do not combine with {conflict} yet");
    }

    /// <summary>What <see cref="KvCacheConfig.SlidingRing"/> does not combine with in this plan, or null.</summary>
    private string? RingConflict() =>
        Config.Policy is { } p ? $"a token policy ({p.Name})"
        : Config.Offload is { } o ? $"offloading ({o.Name})"
        : Keys.StagingTokens > 0 || Values.StagingTokens > 0 ? $"a codec that stages recent tokens ({(Keys.StagingTokens > 0 ? Keys : Values).Codec.Name})"
        : Config.SinkTokens > 0 ? $"sink tokens (--sink {Config.SinkTokens})"
        : null;

    /// <summary>Parses the spec's formats and builds every codec; throws <see cref="KvSpecException"/> when the model
    /// cannot hold the spec (unknown names, a key-only format for values, a profile of another shape, ...).</summary>
    /// <param name="sinkBankEntries">With sink tokens: how many cached prefixes keep their sink copies.</param>
    public static KvLayoutPlan Build(KvShape shape, KvCacheConfig config, int sinkBankEntries = 64) => new(shape, config, sinkBankEntries);

    /// <summary>The side's plan: keys or values.</summary>
    public KvSidePlan Of(KvSide side) => side == KvSide.Key ? Keys : Values;

    /// <summary>Bytes of one block of one layer, every head, keys and values.</summary>
    public long BytesPerLayerBlock(int layer) => (long)Shape.KvHeads * (Keys.BlockLayout(layer).Total + Values.BlockLayout(layer).Total);

    /// <summary>Bytes of one block in every layer and head, keys and values.</summary>
    public long BytesPerBlock
    {
        get
        {
            long n = 0;
            for (int l = 0; l < Shape.Layers; l++) n += BytesPerLayerBlock(l);
            return n;
        }
    }

    /// <summary>Bytes of sparse rows beside one block of one layer and head at the nominal outlier rate (formats that keep
    /// exact outliers beside blocks: KVQuant's), keys and values; the cache counts what is really held.</summary>
    public (double Keys, double Values) ExpectedOutlierBytes(int layer) =>
        (Keys.CodecOf(layer).ExpectedOutlierBytesPerBlock, Values.CodecOf(layer).ExpectedOutlierBytesPerBlock);

    /// <summary>What a budget sets aside per block (every layer and head, keys and values) for the sparse rows beside it:
    /// twice the nominal rate's bytes (text unlike the calibration's has more outliers), 0 without sparse rows.</summary>
    public long OutlierReservePerBlock
    {
        get
        {
            double n = 0;
            for (int l = 0; l < Shape.Layers; l++)
            {
                var (k, v) = ExpectedOutlierBytes(l);
                n += Shape.KvHeads * (k + v);
            }
            return (long)Math.Ceiling(2 * n);
        }
    }

    /// <summary>Blocks that hold <paramref name="tokens"/> tokens (the last one partial).</summary>
    public long BlocksFor(long tokens) => (tokens + BlockTokens - 1) / BlockTokens;

    /// <summary>Whether <paramref name="layer"/> keeps its blocks in a ring (<see cref="KvCacheConfig.SlidingRing"/> on a
    /// sliding-window layer).</summary>
    public bool IsRing(int layer) => Config.SlidingRing && Shape.WindowOf(layer) > 0;

    /// <summary>
    /// Blocks one layer of a sequence of <paramref name="tokens"/> tokens holds between chunks: every block of the
    /// tokens, or in a ring (<see cref="IsRing"/>) only those the next query (position <paramref name="tokens"/>) can
    /// still see: a block ending at or before its window's first token, tokens + 1 - window, is back in the pool
    /// (the rule of <c>Paging.SlidingRings.Release</c>). At most ceil((window - 1) / B) + 1 blocks whatever the length.
    /// </summary>
    public long HeldBlocks(int layer, long tokens)
    {
        long blocks = BlocksFor(tokens);
        if (!IsRing(layer)) return blocks;
        long firstSeen = Math.Max(0, tokens + 1 - Shape.WindowOf(layer));
        return blocks - Math.Min(blocks, firstSeen / BlockTokens);
    }

    /// <summary>The most blocks a ring layer holds between chunks, ceil((window - 1) / B) + 1; for a layer that keeps
    /// every token, null.</summary>
    public long? RingBlocks(int layer) =>
        IsRing(layer) ? (Shape.WindowOf(layer) - 1 + BlockTokens - 1) / BlockTokens + 1 : null;

    /// <summary>Bytes of the blocks one sequence of <paramref name="tokens"/> tokens holds, every layer (rings counted
    /// by <see cref="HeldBlocks"/>), keys and values; no staging, sinks or sparse rows.</summary>
    public long BlockBytesAt(long tokens)
    {
        long n = 0;
        for (int l = 0; l < Shape.Layers; l++) n += HeldBlocks(l, tokens) * BytesPerLayerBlock(l);
        return n;
    }

    /// <summary>Keys and values of <paramref name="blocks"/> blocks of one layer, every head, by kind.</summary>
    public (KvBytes Keys, KvBytes Values) LayerBlockBytes(int layer, long blocks) =>
        (Keys.BlockLayout(layer) * (blocks * Shape.KvHeads), Values.BlockLayout(layer) * (blocks * Shape.KvHeads));

    /// <summary>Bytes of f16 sink copies of one sequence, one side (every layer and KV head); 0 without sink tokens.</summary>
    public long SinkBytesPerSide => 2L * Shape.Layers * Shape.KvHeads * Shape.HeadDim * SinkTokens;

    /// <summary>Bytes of f16 staging of one sequence, one side (every layer and KV head); 0 for per-token formats.</summary>
    public long StagingBytes(KvSide side) => 2L * Shape.Layers * Shape.KvHeads * Shape.HeadDim * Of(side).StagingTokens;

    /// <summary>Bytes a sequence keeps outside blocks whatever its length: staging and sink copies, keys and values.</summary>
    public long BytesPerSequence => StagingBytes(KvSide.Key) + StagingBytes(KvSide.Value) + 2 * SinkBytesPerSide;

    /// <summary>Bytes the cache reserves for the sink copies of cached prefixes (keys and values of every entry); 0 without
    /// sink tokens or under a token policy (whose blocks are never shared).</summary>
    public long SinkBankBytes => Config.Policy == null ? SinkBankEntries * 2 * SinkBytesPerSide : 0;

    /// <summary>What one sequence of <paramref name="tokens"/> tokens holds (no token policy): whole blocks, the last one
    /// partial, in every layer or, for ring layers, those of <see cref="HeldBlocks"/>, plus <see cref="BytesPerSequence"/>; with
    /// <paramref name="expectedOutliers"/>, plus the sparse rows beside blocks at the nominal outlier rate (as
    /// <see cref="KvBytes.Outliers"/>; a real cache counts what the data gave).</summary>
    public KvMemory MemoryAt(int tokens, bool expectedOutliers = false)
    {
        KvBytes keys = default, values = default;
        for (int l = 0; l < Shape.Layers; l++)
        {
            long blocks = HeldBlocks(l, tokens);
            var (k, v) = LayerBlockBytes(l, blocks);
            keys += k;
            values += v;
            if (!expectedOutliers) continue;
            var (ek, ev) = ExpectedOutlierBytes(l);
            keys += new KvBytes(0, 0, 0, (long)Math.Round(ek * blocks * Shape.KvHeads), 0, 0);
            values += new KvBytes(0, 0, 0, (long)Math.Round(ev * blocks * Shape.KvHeads), 0, 0);
        }
        return new KvMemory(keys, values, BytesPerSequence, tokens, Shape.KvDim * Shape.Layers);
    }

    /// <summary>The name used in reports ("f16", "q4_0/f16", "f16 h2o@25%").</summary>
    public override string ToString() => Config.Name;
}
