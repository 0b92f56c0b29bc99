using Kvq.Cache.Attention;
using Kvq.Cache.Codecs;
using Kvq.Cache.Offload;
using Kvq.Cache.Paging;
using Kvq.Cache.Policies;
using Kvq.Cache.Storage;
using Kvq.Tensors;

namespace Kvq.Cache;

/// <summary>
/// One sequence in a <see cref="PagedKvCache"/>: a list of block ids (shared by all layers) plus, for whole-block
/// codecs, an f16 staging buffer of recent tokens. Keys are rotated before encoding unless the key codec is pre-RoPE,
/// in which case attention rotates decoded keys at their positions. Storage and bookkeeping only: attention is
/// <see cref="BlockAttention"/> over this sequence as an <see cref="IKvBlockReader"/>; a token policy's state is a
/// <see cref="SequencePolicy"/>.
/// </summary>
public sealed class PagedKvSequence : IKvSequence, IKvMemoryReport, IKvOutlierReport, IDisposable, IKvBlockReader
{
    private readonly PagedKvCache _cache;
    private readonly KvShape _shape;
    private readonly int _id;                 // sequence id in the cache's bookkeeping
    private readonly int[] _count;            // per layer: tokens (slots) held
    private readonly KvSideStore _keys, _values;
    private readonly SequencePolicy? _policy;
    private readonly BlockSelector? _offload;   // block summaries and the budget, when attention reads selected blocks
    private readonly SlidingRings? _rings;      // sliding-window layers' own blocks (KvCacheConfig.SlidingRing)
    private readonly TokenWriter _writer;
    // Blocks are registered for prefix sharing only once their content is final: at append for formats that encode
    // each token as it comes; after sealing (and with the sink copies banked) otherwise.
    private readonly bool _deferRegister;
    private bool _sinkPublished, _disposed;

    public int Length { get; private set; }
    /// <summary>Physical block ids, in order (shared with the bookkeeping; do not hold across appends).</summary>
    public ReadOnlySpan<int> Blocks => _cache.Sequences.BlockIds(_id);
    public PagedKvCache Cache => _cache;

    internal PagedKvSequence(PagedKvCache cache, ReadOnlySpan<int> prompt, PagedKvSequence? parent = null)
    {
        _cache = cache;
        _shape = cache.Shape;
        _count = parent != null ? (int[])parent._count.Clone() : new int[_shape.Layers];
        _keys = new KvSideStore(cache.Plan.Keys, cache.Keys, _shape, cache.Config.SinkTokens);
        _values = new KvSideStore(cache.Plan.Values, cache.Values, _shape, cache.Config.SinkTokens);
        _deferRegister = _keys.Staging != null || _values.Staging != null || _keys.Sink != null;
        _policy = SequencePolicy.For(cache, this, _count);
        _rings = SlidingRings.For(cache);
        _offload = BlockSelector.For(cache.Config, _shape);
        _writer = new TokenWriter(_shape, _keys, _values, _offload?.Summaries);
        if (parent != null)
        {
            if (parent._policy != null) _policy!.CopyFrom(parent._policy);
            _keys.CopySinkFrom(parent._keys);
            _values.CopySinkFrom(parent._values);
            _id = cache.Sequences.Fork(parent._id);
            _sinkPublished = parent._sinkPublished;
            Length = parent.Length;
            return;
        }
        if (_policy != null)
        {
            // Under a token policy the blocks are each layer's own: a prefix is the policy's state after it.
            _id = cache.Sequences.Create(default, out _);
            Length = _policy.TryAdopt(prompt);
            return;
        }
        _id = cache.Sequences.Create(prompt, out int cached);
        var (fromPool, fromHost) = PrefixReuse.Restore(cache, _id, prompt, cached, _keys, _values, register: !_deferRegister);
        _sinkPublished = fromPool > 0;
        Length = fromPool + fromHost;
        Array.Fill(_count, Length);
        // Reused blocks are sealed: a staging format's new tokens stage from here.
        Array.Fill(_keys.Sealed, _keys.Staging != null ? Length : 0);
        Array.Fill(_values.Sealed, _values.Staging != null ? Length : 0);
        if (fromHost > 0 && _deferRegister) PublishBlocks();
    }

    /// <summary>Registers the full blocks whose content is final (staging formats: sealed on both sides), first
    /// banking the sink copies beside block 0.</summary>
    private void PublishBlocks()
    {
        int durable = Length;
        if (_keys.Staging != null) foreach (int sealedTokens in _keys.Sealed) durable = Math.Min(durable, sealedTokens);
        if (_values.Staging != null) foreach (int sealedTokens in _values.Sealed) durable = Math.Min(durable, sealedTokens);
        if (durable < Math.Max(_cache.Config.BlockTokens, _cache.Config.SinkTokens)) return;
        if (_keys.Sink != null && !_sinkPublished)
        {
            int dropped = _cache.Sinks!.Put(Blocks[0], _keys.Sink, _values.Sink!);
            if (dropped >= 0) _cache.Sequences.Pool.Unregister(dropped);
            _sinkPublished = true;
        }
        _cache.Sequences.Register(_id, durable);
    }

    /// <summary>A sequence that shares all of this one's tokens (copy-on-write on the partial last block; under a token
    /// policy, on every shared block of a layer the first time the policy changes that layer).</summary>
    public PagedKvSequence Fork()
    {
        if (_policy != null) return new PagedKvSequence(_cache, default, this);
        if (!_cache.SupportsPrefixSharing || _keys.Staging != null || _values.Staging != null)
            throw new KvSpecException($"{_cache.Config.Name}: sequences cannot be forked while a codec keeps recent tokens in staging " +
                                      "or a token policy owns the blocks");
        return new PagedKvSequence(_cache, default, this);
    }

    public void BeginChunk(ReadOnlySpan<int> tokens)
    {
        if (_policy != null) { _policy.BeginChunk(tokens, Length); return; }
        var copy = _cache.Sequences.Append(_id, tokens, register: !_deferRegister);
        if (copy is { } c) _cache.CopyBlock(c);
    }

    public void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n)
    {
        if (_rings != null && _rings.Has(layer)) _rings.Reserve(layer, _count[layer] + n);
        var blocks = ((IKvBlockReader)this).Blocks(layer);
        int kvDim = _shape.KvDim;
        for (int t = 0; t < n; t++)
        {
            int slot = _count[layer];
            int pos = _policy == null ? slot : _policy.Slots.Positions(layer, 0)[slot];
            _writer.Write(layer, slot, pos, k.Slice(t * kvDim, kvDim), v.Slice(t * kvDim, kvDim), blocks);
            _count[layer] = slot + 1;
            _keys.Seal(layer, slot + 1, Blocks);
            _values.Seal(layer, slot + 1, Blocks);
        }
    }

    /// <summary>Whether <see cref="Append"/> may run on one thread while other sequences of the same cache append on
    /// others (the per-sequence region of the model's batched step): it touches only this
    /// sequence's stores, its own blocks (allocated serially by <see cref="BeginChunk"/>) and the arenas' chunk lists
    /// (grown under a lock). Not with a token policy, sliding rings or offload summaries, whose state is kept elsewhere.</summary>
    internal bool AppendsConcurrently => _policy == null && _rings == null && _offload == null;

    public void Commit(int n)
    {
        Length += n;
        _rings?.Release(Length);
        if (_policy != null) _policy.Apply(n, Length);
        else if (_deferRegister) PublishBlocks();
    }

    public void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par)
    {
        BlockAttention.Attend(this, layer, q, n, output, par);
        AttendedBatch(layer, q, n);
    }

    /// <summary>What <see cref="Attend"/> does after the attention itself, for a caller that attended this sequence
    /// within a <see cref="BatchAttention"/> (a token policy observes the layer's attention).</summary>
    internal void AttendedBatch(int layer, ReadOnlySpan<float> q, int n)
    {
        if (_policy is { Slots.HasAttention: true }) _policy.ObserveAttention(layer, q, n);
    }

    KvShape IKvBlockReader.Shape => _shape;
    int IKvBlockReader.BlockTokens => _cache.Config.BlockTokens;
    KvSideStore IKvBlockReader.Keys => _keys;
    KvSideStore IKvBlockReader.Values => _values;
    int IKvBlockReader.Count(int layer) => _count[layer];
    /// <summary>Offloaded: the block summaries and the selection attention reads through; null otherwise.</summary>
    public BlockSelector? Offload => _offload;
    ReadOnlySpan<int> IKvBlockReader.Blocks(int layer) =>
        _policy != null ? _policy.Slots.Blocks(layer) : _rings != null && _rings.Has(layer) ? _rings.Blocks(layer) : Blocks;
    ReadOnlySpan<int> IKvBlockReader.Positions(int layer, int head, int slot0, int count) => _policy == null
        ? IdentityPositions.Span(slot0 + count).Slice(slot0, count) : _policy.Slots.Positions(layer, head).Slice(slot0, count);
    ReadOnlySpan<float> IKvBlockReader.LogWeights(int layer, int head, int slot0, int count) =>
        _policy is { Slots.HasLogWeights: true } ? _policy.Slots.LogWeights(layer, head).Slice(slot0, count) : default;

    /// <summary>Outliers this sequence's key encodes stored exactly (its own: not shared with other sequences).</summary>
    public KvOutlierCounts KeyOutliers => _keys.OutlierCounts;
    public KvOutlierCounts ValueOutliers => _values.OutlierCounts;

    /// <summary>Tokens each layer holds (slots), for tests and reports; equals Length without a policy.</summary>
    public int SlotCount(int layer) => _count[layer];

    /// <summary>Token positions held by a layer and KV head, in slot order.</summary>
    public ReadOnlySpan<int> SlotPositions(int layer, int head) => ((IKvBlockReader)this).Positions(layer, head, 0, _count[layer]);

    /// <summary>ln(tokens a slot stands for) per slot (merging policies); empty when slots are never merged.</summary>
    public ReadOnlySpan<float> SlotLogWeights(int layer, int head) => ((IKvBlockReader)this).LogWeights(layer, head, 0, _count[layer]);

    /// <summary>Attention statistics per slot (policies that read attention); empty otherwise.</summary>
    public ReadOnlySpan<float> SlotAttention(int layer, int head) =>
        _policy is { Slots.HasAttention: true } ? _policy.Slots.Attention(layer, head)[.._count[layer]] : default;

    /// <summary>Exact bytes this sequence holds: its blocks in every layer and head (shared ones included), the sparse
    /// outlier rows beside them (as <see cref="KvBytes.Outliers"/>), plus staging and sink copies. Without a policy every
    /// layer uses the sequence's blocks; with one, each layer holds its own.</summary>
    public KvMemory Memory()
    {
        KvBytes keys = default, values = default;
        for (int l = 0; l < _shape.Layers; l++)
        {
            var blocks = ((IKvBlockReader)this).Blocks(l);
            if (_rings != null && _rings.Has(l)) blocks = blocks[(blocks.Length - _rings.HeldBlocks(l))..]; // released ones are -1
            var (k, v) = _cache.Plan.LayerBlockBytes(l, blocks.Length);
            keys += k + new KvBytes(0, 0, 0, _cache.Keys[l].OutlierBytesOf(blocks), 0, 0);
            values += v + new KvBytes(0, 0, 0, _cache.Values[l].OutlierBytesOf(blocks), 0, 0);
        }
        return new KvMemory(keys, values, _keys.OutsideBlockBytes + _values.OutsideBlockBytes + (_offload?.Summaries.AllocatedBytes ?? 0),
            Length, _shape.Layers * _shape.KvDim);
    }

    /// <summary>
    /// Copies this sequence's stored KV (its blocks' encoded bytes, staging, sink copies, token ids) to host memory
    /// and releases its blocks: preemption by swapping, where the compressed bytes are a cheap copy. The sequence is
    /// disposed; <see cref="SwapIn"/> makes an identical one.
    /// </summary>
    public SwappedKv SwapOut()
    {
        var swapped = Snapshot();
        Dispose();
        return swapped;
    }

    /// <summary>A host copy of what this sequence stores, as <see cref="SwapOut"/> takes it, leaving the sequence as it
    /// is (session files: <see cref="Sessions.KvSession"/>).</summary>
    public SwappedKv Snapshot()
    {
        if (_policy != null) throw new KvSpecException($"{_cache.Config.Name}: a sequence under a token policy cannot be swapped or saved");
        if (_rings != null) throw new KvSpecException($"{_cache.Config.Name}: a sequence with sliding-window rings cannot be swapped or saved yet");
        if (_count.Any(c => c != Length)) throw new InvalidOperationException("swap out between chunks only (every layer at the same length)");
        var (keys, values) = _cache.CopyOut(Blocks.ToArray());
        return new SwappedKv(_cache.Sequences.TokenIds(_id).ToArray(), Length, keys, values, _keys.Save(), _values.Save());
    }

    /// <summary>Exactly <see cref="SwappedKv.Bytes"/> of the <see cref="Snapshot"/> this sequence would give now,
    /// counted without copying anything: its blocks' encoded bytes as <see cref="BlockArena.CopyOut"/> lays them
    /// out (sparse rows with their lengths), plus its staging and sink copies.</summary>
    public long SnapshotBytes => _cache.CopyOutBytes(Blocks) + _keys.OutsideBlockBytes + _values.OutsideBlockBytes;

    /// <summary>A sequence in <paramref name="cache"/> (the one it was swapped out of, or one of the same shape and
    /// formats) holding exactly what <paramref name="swapped"/> held, in freshly allocated blocks.</summary>
    /// <exception cref="KvCacheFullException">Not enough free blocks; nothing changed.</exception>
    public static PagedKvSequence SwapIn(PagedKvCache cache, SwappedKv swapped)
    {
        var seq = new PagedKvSequence(cache, default);
        try
        {
            cache.Sequences.Append(seq._id, swapped.Tokens, register: !seq._deferRegister);
            cache.CopyIn(seq.Blocks.ToArray(), swapped.Keys, swapped.Values);
            seq._keys.Restore(swapped.KeyState);
            seq._values.Restore(swapped.ValueState);
            Array.Fill(seq._count, swapped.Length);
            seq.Length = swapped.Length;
            if (seq._offload is { } offload) seq._keys.Summarize(offload.Summaries, seq._shape, seq._count, seq.Blocks);
            if (seq._deferRegister) seq.PublishBlocks();
            return seq;
        }
        catch
        {
            seq.Dispose();
            throw;
        }
    }

    public SequenceBlockUsage BlockUsage => _cache.Sequences.Usage(_id);

    /// <summary>Fresh blocks an append of <paramref name="tokens"/> tokens would take from the pool (admission and
    /// preemption decisions; a shared partial last block counts, as it is copied first).</summary>
    /// <remarks>Under a token policy: the most any one layer takes (layers draw from pools of their own), a layer
    /// counted to at most <paramref name="slotCap"/> slots (the policy's peak: appends beyond it follow evictions).</remarks>
    public int BlocksNeededToAppend(int tokens, int slotCap = int.MaxValue) =>
        _policy != null ? _policy.Slots.BlocksNeeded(_count, tokens, slotCap) : _cache.Sequences.BlocksNeededToAppend(_id, tokens);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _policy?.Slots.ReleaseAll();
        _rings?.ReleaseAll();
        _cache.Sequences.Free(_id);
    }
}
