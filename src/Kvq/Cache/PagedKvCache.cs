using Kvq.Cache.Codecs;
using Kvq.Cache.Layout;
using Kvq.Cache.Paging;
using Kvq.Cache.Storage;

namespace Kvq.Cache;

/// <summary>
/// The KV cache of a model: per layer, one arena for keys and one for values, addressed by block ids that all
/// layers share; sequences draw block ids from it. Formats and bytes come from its <see cref="KvLayoutPlan"/>.
/// </summary>
public sealed class PagedKvCache
{
    public KvShape Shape => Plan.Shape;
    public KvCacheConfig Config => Plan.Config;
    /// <summary>What is stored, and its bytes (built once; the cache only allocates what it says).</summary>
    public KvLayoutPlan Plan { get; }
    /// <summary>Codec of layer 0, head 0. The heads of a layer share one block layout; layers may differ in width
    /// (KVQuant's :mixed) but not in kind (pre-RoPE, whole-block encoding, residual window).</summary>
    public KvCodec KeyCodec => Plan.Keys.Codec;
    public KvCodec ValueCodec => Plan.Values.Codec;
    /// <summary>Per layer, per KV head.</summary>
    internal KvCodec[][] KeyCodecs => Plan.Keys.Codecs;
    internal KvCodec[][] ValueCodecs => Plan.Values.Codecs;
    internal BlockArena[] Keys { get; }     // per layer
    internal BlockArena[] Values { get; }   // per layer
    /// <summary>Block bookkeeping: tables, reference counts, prefix index (no tensors).</summary>
    public PagedSequences Sequences { get; }
    /// <summary>With a token policy: one pool per layer (layers keep different numbers of tokens, PyramidKV), whose
    /// block ids address that layer's arenas; null without a policy (all layers share <see cref="Sequences"/>' ids).</summary>
    public BlockPool[]? LayerPools { get; }
    /// <summary>With <see cref="KvCacheConfig.SlidingRing"/>: per layer, the pool of a sliding-window layer's ring
    /// (<see cref="SlidingRings"/>), whose ids address that layer's arenas; null entries (and null without rings) for
    /// layers that use <see cref="Sequences"/>' ids.</summary>
    public BlockPool?[]? RingPools { get; }

    /// <summary>Whether full blocks can be shared between sequences: every format can (a staging format's blocks are
    /// registered once sealed, sink copies travel through <see cref="Sinks"/>), except under a token policy, whose
    /// layers each keep their own blocks.</summary>
    /// Offloaded sequences keep block summaries of their own, so they do not share either.
    public bool SupportsPrefixSharing => Config.Policy == null && Config.Offload == null && RingPools == null;

    /// <summary>Sink copies of registered first blocks (null without sink tokens).</summary>
    internal SinkBank? Sinks { get; }

    /// <summary>Bytes reserved beside the blocks for <see cref="Sinks"/> (0 without sink tokens).</summary>
    public long SinkBankBytes => Sinks?.ReservedBytes ?? 0;

    /// <summary>A cache of <paramref name="config"/>'s formats for a model of <paramref name="shape"/> (builds the plan).</summary>
    /// <param name="maxTokens">Capacity of the block pool in tokens (all sequences together); arenas grow as blocks are used.</param>
    /// <param name="sinkBankEntries">With sink tokens: how many cached prefixes keep their sink copies.</param>
    public PagedKvCache(KvShape shape, KvCacheConfig config, int maxTokens = 1 << 20, int sinkBankEntries = 64)
        : this(KvLayoutPlan.Build(shape, config, sinkBankEntries), maxTokens)
    {
    }

    /// <param name="maxTokens">Capacity of the block pool in tokens (all sequences together); arenas grow as blocks are used.</param>
    public PagedKvCache(KvLayoutPlan plan, int maxTokens = 1 << 20)
    {
        Plan = plan;
        var shape = plan.Shape;
        int bt = plan.BlockTokens;
        int blocks = Math.Max(1, (int)plan.BlocksFor(maxTokens));
        Keys = new BlockArena[shape.Layers];
        Values = new BlockArena[shape.Layers];
        for (int l = 0; l < shape.Layers; l++)
        {
            var dir = plan.Config.BlockDirectory;
            Keys[l] = new BlockArena(shape.KvHeads, (int)plan.Keys.BlockLayout(l).Total, blocks, plan.Keys.CodecOf(l).HasBlockOutliers,
                dir == null ? null : new BlockFile(dir));
            Values[l] = new BlockArena(shape.KvHeads, (int)plan.Values.BlockLayout(l).Total, blocks, plan.Values.CodecOf(l).HasBlockOutliers,
                dir == null ? null : new BlockFile(dir));
        }
        Sequences = new PagedSequences(blocks, bt);
        if (plan.SinkTokens > 0 && plan.Config.Policy == null)
        {
            Sinks = new SinkBank(plan.SinkBankEntries, 2 * plan.SinkBytesPerSide);
            Sequences.Pool.Evicted += Sinks.Remove;
        }
        if (plan.Config.Policy != null)
        {
            LayerPools = new BlockPool[shape.Layers];
            for (int l = 0; l < shape.Layers; l++) LayerPools[l] = new BlockPool(blocks, bt);
        }
        RingPools = SlidingRingPools(plan, blocks);
        // Sparse outlier rows beside blocks (KVQuant) go when their block is freed or reused for new content.
        if (Keys.Any(a => a.HasOutliers) || Values.Any(a => a.HasOutliers))
        {
            if (RingPools != null)
                for (int l = 0; l < shape.Layers; l++)
                {
                    if (RingPools[l] is not { } ring) continue;
                    int layer = l;
                    ring.Freed += id => { Keys[layer].ClearOutliers(id); Values[layer].ClearOutliers(id); };
                }
            if (LayerPools == null)
            {
                Sequences.Pool.Freed += ClearOutliers;
                Sequences.Pool.Evicted += ClearOutliers;
            }
            else
                for (int l = 0; l < shape.Layers; l++)
                {
                    int layer = l;
                    LayerPools[l].Freed += id => { Keys[layer].ClearOutliers(id); Values[layer].ClearOutliers(id); };
                    LayerPools[l].Evicted += id => { Keys[layer].ClearOutliers(id); Values[layer].ClearOutliers(id); };
                }
        }
    }

    /// <summary>The ring pools of <see cref="KvCacheConfig.SlidingRing"/>, or null when it is off or no layer slides.</summary>
    private static BlockPool?[]? SlidingRingPools(KvLayoutPlan plan, int blocks)
    {
        var config = plan.Config;
        var shape = plan.Shape;
        if (!config.SlidingRing || shape.LayerWindows == null || !shape.LayerWindows.Any(w => w > 0)) return null;
        // KvLayoutPlan has refused what rings do not combine with (a token policy, offloading, staging codecs, sinks).
        var pools = new BlockPool?[shape.Layers];
        for (int l = 0; l < shape.Layers; l++)
            if (shape.WindowOf(l) > 0) pools[l] = new BlockPool(blocks, plan.BlockTokens);
        return pools;
    }

    /// <summary>Where evicted prefix blocks go (null: they are lost on eviction). See <see cref="KeepEvictedPrefixes"/>.</summary>
    public HostPrefixTier? HostPrefixes { get; private set; }

    /// <summary>
    /// From now on, a cached prefix block that the pool evicts is copied to a host tier of <paramref name="budgetBytes"/>
    /// bytes, and a new sequence whose prompt continues past the pool's cached blocks takes matching blocks back from it.
    /// </summary>
    /// <exception cref="KvSpecException">The cache shares no prefixes (token policy, offloading) or a codec keeps
    /// recent tokens in staging (KIVI's residual: its blocks are published late and restored with their staging).</exception>
    /// <param name="disk">A disk tier behind host memory (<see cref="PrefixFileTier"/>): blocks host memory has no room
    /// for go there instead of being dropped. Null: none.</param>
    public HostPrefixTier KeepEvictedPrefixes(long budgetBytes, PrefixFileTier? disk = null)
    {
        if (!SupportsPrefixSharing)
            throw new KvSpecException(LayerPools != null
                ? $"{Config.Name}: under a token policy prefixes are policy states shared in the pool only (no block prefix to keep in host memory yet)"
                : $"{Config.Name}: offloaded sequences share no prefixes, so there is no prefix to keep");
        if (Plan.Keys.StagingTokens > 0 || Plan.Values.StagingTokens > 0)
            throw new KvSpecException($"{Config.Name}: a codec that stages recent tokens (whole-block encoding) cannot keep evicted prefixes in host memory yet");
        if (HostPrefixes != null) throw new InvalidOperationException("the host prefix tier is set already");
        var tier = new HostPrefixTier(budgetBytes, disk);
        Sequences.Pool.Evicting += (id, hash) =>
        {
            (Half[], Half[])? sinks = Sinks != null && Sinks.TryGet(id, out var e) ? e : null;
            var (keys, values) = CopyOut([id]);
            tier.Put(hash, keys, values, sinks);
        };
        return HostPrefixes = tier;
    }

    private void ClearOutliers(int blockId)
    {
        for (int l = 0; l < Shape.Layers; l++)
        {
            if (RingPools?[l] != null) continue; // that layer's arenas are addressed by its ring's ids
            Keys[l].ClearOutliers(blockId);
            Values[l].ClearOutliers(blockId);
        }
    }

    /// <summary>Under a token policy: the prompt prefixes kept for sharing (null until <see cref="SharePolicyPrefixes"/>).</summary>
    public Policies.PolicyPrefixes? PolicyPrefixes { get; private set; }

    /// <summary>
    /// From now on, sequences under this cache's token policy that take their tokens in chunks of
    /// <paramref name="chunkTokens"/> keep the policy's state after each prompt prefix (a multiple of the chunk and of the
    /// block size), and a new sequence whose prompt starts with such a prefix starts from it (see
    /// <see cref="Policies.PolicyPrefixes"/>): exactly the state it would reach alone, its blocks shared until the
    /// policy next changes them (copy-on-write per layer).
    /// </summary>
    /// <param name="capacity">Prefixes kept at most (their positions and statistics live in host memory).</param>
    /// <exception cref="KvSpecException">No token policy, or sink tokens (their exact copies are per sequence).</exception>
    public Policies.PolicyPrefixes SharePolicyPrefixes(int chunkTokens, int capacity = 1024)
    {
        if (LayerPools == null) throw new KvSpecException($"{Config.Name}: no token policy; prefixes are shared by block already");
        if (Config.SinkTokens > 0)
            throw new KvSpecException($"{Config.Name}: prefixes under a token policy are not shared with sink tokens yet");
        if (PolicyPrefixes != null) throw new InvalidOperationException("policy prefixes are shared already");
        return PolicyPrefixes = new Policies.PolicyPrefixes(LayerPools, chunkTokens, capacity);
    }

    /// <summary>A new sequence. With a prompt, leading full blocks already cached for the same tokens are reused
    /// (under a token policy: the policy's state after the longest kept prefix, see <see cref="SharePolicyPrefixes"/>):
    /// the returned sequence's Length tells how many prompt tokens are already present.</summary>
    public PagedKvSequence CreateSequence(ReadOnlySpan<int> prompt = default) =>
        new(this, SupportsPrefixSharing || PolicyPrefixes != null ? prompt : default);

    /// <summary>Bytes of all blocks held by live sequences, each shared block counted once.</summary>
    public long HeldBytes
    {
        get
        {
            if (RingPools != null)
            {
                long n = 0;
                for (int l = 0; l < Shape.Layers; l++)
                {
                    var pool = RingPools[l] ?? Sequences.Pool;
                    n += pool.HeldBlockCount * BytesPerLayerBlock(l) + HeldOutlierBytes(pool, l);
                }
                return n;
            }
            if (LayerPools == null) return (long)Sequences.Pool.Usage.HeldBlocks * BytesPerBlock + HeldOutlierBytes(Sequences.Pool, -1);
            long blocks = 0;
            for (int l = 0; l < LayerPools.Length; l++)
                blocks += LayerPools[l].HeldBlockCount * BytesPerLayerBlock(l) + HeldOutlierBytes(LayerPools[l], l);
            return blocks;
        }
    }

    /// <summary>Bytes of the free blocks that still cache a prefix (refcount 0, registered: revivable by a prefix hit
    /// until the pool hands them out again), block bytes only (the sparse outlier rows kept beside them are not
    /// counted, so this costs O(layers)). Not part of <see cref="HeldBytes"/>: the pool reuses them, least recently
    /// released first, whenever it needs a block.</summary>
    public long CachedBytes => SumOverPools(static p => p.CachedFreeBlockCount);

    /// <summary>What the references to shared blocks beyond each block's first would take if every holder had its own
    /// copy: <see cref="HeldBytes"/> plus this is what the live sequences would hold with nothing shared. Block bytes
    /// only (a shared block's sparse outlier rows are counted once, in <see cref="HeldBytes"/>), so this costs
    /// O(layers).</summary>
    public long SharedReferenceBytes => SumOverPools(static p => p.ReferenceCount - p.HeldBlockCount);

    /// <summary>Sum over the layers of (blocks the layer's pool counts) x bytes of one block of that layer.</summary>
    private long SumOverPools(Func<BlockPool, int> blocks)
    {
        if (RingPools == null && LayerPools == null) return blocks(Sequences.Pool) * BytesPerBlock;
        long n = 0;
        for (int l = 0; l < Shape.Layers; l++)
            n += (long)blocks(RingPools != null ? RingPools[l] ?? Sequences.Pool : LayerPools![l]) * BytesPerLayerBlock(l);
        return n;
    }

    /// <summary>Sparse outlier rows beside the held blocks of a pool (one layer's, or every layer's for -1).</summary>
    private long HeldOutlierBytes(BlockPool pool, int layer)
    {
        if (!Keys.Any(a => a.HasOutliers) && !Values.Any(a => a.HasOutliers)) return 0;
        long n = 0;
        Span<int> one = stackalloc int[1];
        for (int id = 0; id < pool.BlockCount; id++)
        {
            if (pool.IsFree(id)) continue;
            one[0] = id;
            for (int l = layer < 0 ? 0 : layer; l < (layer < 0 ? Shape.Layers : layer + 1); l++)
                n += Keys[l].OutlierBytesOf(one) + Values[l].OutlierBytesOf(one);
        }
        return n;
    }

    /// <summary>Bytes of one block of one layer, every head, keys and values.</summary>
    public long BytesPerLayerBlock(int layer) => Plan.BytesPerLayerBlock(layer);

    /// <summary>The codec of a layer's head 0 (the heads of a layer share its layout; layers may differ under :mixed).</summary>
    public KvCodec KeyCodecOf(int layer) => Plan.Keys.CodecOf(layer);
    public KvCodec ValueCodecOf(int layer) => Plan.Values.CodecOf(layer);

    /// <summary>Bytes of one block of one KV head of a layer, by kind.</summary>
    public KvBytes KeyLayout(int layer) => Plan.Keys.BlockLayout(layer);
    public KvBytes ValueLayout(int layer) => Plan.Values.BlockLayout(layer);

    /// <summary>Bytes of one block in every layer and head, keys and values.</summary>
    public long BytesPerBlock => Plan.BytesPerBlock;

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

    /// <summary>The encoded bytes of <paramref name="blocks"/> in every layer (keys, values), as
    /// <see cref="BlockArena.CopyOut"/> writes them.</summary>
    internal (byte[][] Keys, byte[][] Values) CopyOut(int[] blocks) =>
        (Array.ConvertAll(Keys, a => a.CopyOut(blocks)), Array.ConvertAll(Values, a => a.CopyOut(blocks)));

    /// <summary>Bytes <see cref="CopyOut"/> returns for <paramref name="blocks"/>, every layer, keys and values.</summary>
    internal long CopyOutBytes(ReadOnlySpan<int> blocks)
    {
        long n = 0;
        for (int l = 0; l < Shape.Layers; l++) n += Keys[l].CopyOutBytes(blocks) + Values[l].CopyOutBytes(blocks);
        return n;
    }

    /// <summary>Writes what <see cref="CopyOut"/> took into <paramref name="blocks"/> (the same count), every layer.</summary>
    internal void CopyIn(int[] blocks, byte[][] keys, byte[][] values)
    {
        for (int l = 0; l < Shape.Layers; l++)
        {
            Keys[l].CopyIn(blocks, keys[l]);
            Values[l].CopyIn(blocks, values[l]);
        }
    }

    /// <summary>Copies a block's bytes in every layer and head (copy-on-write of a shared partial block).</summary>
    internal void CopyBlock(BlockCopy copy)
    {
        for (int l = 0; l < Shape.Layers; l++)
        {
            Keys[l].CopyBlock(copy.SourceBlockId, copy.DestinationBlockId);
            Values[l].CopyBlock(copy.SourceBlockId, copy.DestinationBlockId);
        }
    }
}
