using Kvq.Cache.Codecs;
using Kvq.Cache.Paging;
using Kvq.Cache.Storage;

namespace Kvq.Cache;

/// <summary>
/// The KV cache of a model: per layer, one arena for keys and one for values, addressed by block ids that all
/// layers share; sequences draw block ids from it. Formats come from <see cref="KvCacheConfig"/>.
/// </summary>
public sealed class PagedKvCache
{
    public KvShape Shape { get; }
    public KvCacheConfig Config { get; }
    /// <summary>Codec of layer 0, head 0. The heads of a layer share one block layout; layers may differ in width
    /// (KVQuant's :mixed) but not in kind (pre-RoPE, whole-block encoding, residual window).</summary>
    public KvCodec KeyCodec => KeyCodecs[0][0];
    public KvCodec ValueCodec => ValueCodecs[0][0];
    /// <summary>Per layer, per KV head.</summary>
    internal KvCodec[][] KeyCodecs { get; }
    internal KvCodec[][] ValueCodecs { get; }
    internal BlockArena[] Keys { get; }     // per layer
    internal BlockArena[] Values { get; }   // per layer
    /// <summary>Block bookkeeping: tables, reference counts, prefix index (no tensors).</summary>
    public PagedSequences Sequences { get; }
    /// <summary>With a token policy: one pool per layer (layers keep different numbers of tokens, PyramidKV), whose
    /// block ids address that layer's arenas; null without a policy (all layers share <see cref="Sequences"/>' ids).</summary>
    public BlockPool[]? LayerPools { get; }

    /// <summary>Whether full blocks can be shared between sequences: every format can (a staging format's blocks are
    /// registered once sealed, sink copies travel through <see cref="Sinks"/>), except under a token policy, whose
    /// layers each keep their own blocks.</summary>
    public bool SupportsPrefixSharing => Config.Policy == null;

    /// <summary>Sink copies of registered first blocks (null without sink tokens).</summary>
    internal SinkBank? Sinks { get; }

    /// <summary>Bytes reserved beside the blocks for <see cref="Sinks"/> (0 without sink tokens).</summary>
    public long SinkBankBytes => Sinks?.ReservedBytes ?? 0;

    /// <param name="maxTokens">Capacity of the block pool in tokens (all sequences together); arenas grow as blocks are used.</param>
    /// <param name="sinkBankEntries">With sink tokens: how many cached prefixes keep their sink copies.</param>
    public PagedKvCache(KvShape shape, KvCacheConfig config, int maxTokens = 1 << 20, int sinkBankEntries = 64)
    {
        Shape = shape;
        Config = config;
        KeyCodecs = CreateCodecs(KvSide.Key);
        ValueCodecs = CreateCodecs(KvSide.Value);
        if (ValueCodec.PreRope) throw new KvSpecException($"'{ValueCodec.Name}' is a key format (pre-RoPE) and cannot store values");
        int blocks = Math.Max(1, (int)(((long)maxTokens + config.BlockTokens - 1) / config.BlockTokens));
        Keys = new BlockArena[shape.Layers];
        Values = new BlockArena[shape.Layers];
        for (int l = 0; l < shape.Layers; l++)
        {
            Keys[l] = new BlockArena(shape.KvHeads, KeyCodecs[l][0].BlockBytes, blocks);
            Values[l] = new BlockArena(shape.KvHeads, ValueCodecs[l][0].BlockBytes, blocks);
        }
        Sequences = new PagedSequences(blocks, config.BlockTokens);
        if (config.SinkTokens > 0 && config.Policy == null)
        {
            long entry = 2L * 2 * shape.Layers * shape.KvHeads * shape.HeadDim * config.SinkTokens; // keys + values, f16
            Sinks = new SinkBank(sinkBankEntries, entry);
            Sequences.Pool.Evicted += Sinks.Remove;
        }
        if (config.Policy is { } policy)
        {
            foreach (var codec in new[] { KeyCodec, ValueCodec })
                if (!codec.CanCopySlots)
                    throw new KvSpecException(codec.EncodesWholeBlocks
                        ? $"policy '{policy.Policy.Name}' evicts single tokens, but '{codec.Name}' encodes whole blocks " +
                          "(recent tokens staged, then quantized together); use a per-token format"
                        : $"policy '{policy.Policy.Name}' moves single tokens, but '{codec.Name}' does not describe its per-token " +
                          "layout (KvCodec.TokenSections)");
            LayerPools = new BlockPool[shape.Layers];
            for (int l = 0; l < shape.Layers; l++) LayerPools[l] = new BlockPool(blocks, config.BlockTokens);
        }
    }

    /// <summary>A new sequence. With a prompt, leading full blocks already cached for the same tokens are reused:
    /// the returned sequence's Length tells how many prompt tokens are already present.</summary>
    public PagedKvSequence CreateSequence(ReadOnlySpan<int> prompt = default) =>
        new(this, SupportsPrefixSharing ? prompt : default);

    /// <summary>Bytes of all blocks held by live sequences, each shared block counted once.</summary>
    public long HeldBytes
    {
        get
        {
            if (LayerPools == null) return (long)Sequences.Pool.Usage.HeldBlocks * BytesPerBlock;
            long blocks = 0;
            for (int l = 0; l < LayerPools.Length; l++) blocks += LayerPools[l].HeldBlockCount * BytesPerLayerBlock(l);
            return blocks;
        }
    }

    /// <summary>Bytes of one block of one layer, every head, keys and values.</summary>
    public long BytesPerLayerBlock(int layer) => (long)Shape.KvHeads * (KeyCodecs[layer][0].BlockBytes + ValueCodecs[layer][0].BlockBytes);

    /// <summary>The codec of a layer's head 0 (the heads of a layer share its layout; layers may differ under :mixed).</summary>
    public KvCodec KeyCodecOf(int layer) => KeyCodecs[layer][0];
    public KvCodec ValueCodecOf(int layer) => ValueCodecs[layer][0];

    /// <summary>Bytes of one block of one KV head of a layer, by kind.</summary>
    public KvBytes KeyLayout(int layer) => KeyCodecs[layer][0].BlockLayout;
    public KvBytes ValueLayout(int layer) => ValueCodecs[layer][0].BlockLayout;

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

    /// <summary>Bytes the arenas hold right now (all chunks allocated).</summary>
    public long AllocatedBytes
    {
        get
        {
            long n = 0;
            for (int l = 0; l < Shape.Layers; l++) n += Keys[l].AllocatedBytes + Values[l].AllocatedBytes;
            return n;
        }
    }

    private KvCodec[][] CreateCodecs(KvSide side)
    {
        var all = new KvCodec[Shape.Layers][];
        for (int l = 0; l < Shape.Layers; l++)
        {
            all[l] = new KvCodec[Shape.KvHeads];
            for (int h = 0; h < Shape.KvHeads; h++)
            {
                var c = Config.CreateCodec(side, l, h, Shape.HeadDim);
                if (h > 0 && c.BlockBytes != all[l][0].BlockBytes)
                    throw new KvSpecException($"{c.Name}: layer {l} head {h} has a block layout unlike head 0 of the layer");
                if (l + h > 0 && (c.PreRope != all[0][0].PreRope || c.EncodesWholeBlocks != all[0][0].EncodesWholeBlocks
                                  || c.ResidualTokens != all[0][0].ResidualTokens))
                    throw new KvSpecException($"{c.Name}: layer {l} head {h} is a different kind of format than layer 0 head 0 " +
                                              "(pre-RoPE, whole-block encoding or residual window)");
                all[l][h] = c;
            }
        }
        return all;
    }

    /// <summary>Copies a block's bytes in every layer and head (copy-on-write of a shared partial block).</summary>
    internal void CopyBlock(BlockCopy copy)
    {
        for (int l = 0; l < Shape.Layers; l++)
            for (int h = 0; h < Shape.KvHeads; h++)
            {
                Keys[l].Block(copy.SourceBlockId, h).CopyTo(Keys[l].Block(copy.DestinationBlockId, h));
                Values[l].Block(copy.SourceBlockId, h).CopyTo(Values[l].Block(copy.DestinationBlockId, h));
            }
    }
}
