using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;
using Kvq.Cuda.Attention;
using Kvq.Tensors;

namespace Kvq.Cuda.Model;

/// <summary>
/// One sequence's KV cache in device memory, for <see cref="CudaTransformer"/>: a block table into a
/// <see cref="CudaKvCache"/> pool (blocks taken as it grows, given back on dispose) and the sequence's own sink copies.
/// f16: keys rotated at their positions, then rounded to f16 (as the CPU f16 cache keeps them), and values. KVQuant
/// (nuqB, nuqB-F%, :mixed, with sink tokens): <see cref="NuqDeviceLayer"/>, encoded on the device with the CPU codecs'
/// math, pre-RoPE keys rotated inside attention from the pool's angle table; where the contiguous decode layout holds
/// the codecs (<see cref="ContiguousLayout"/>), a contiguous <see cref="NuqLayerCache"/> per layer of this sequence,
/// decoded by the split-K decode kernels (decode_attention.cu, version 9). The model appends and attends through device addresses; the
/// <see cref="IKvSequence"/> methods take host spans (copied up and down), so the CPU <c>Transformer</c> can run over
/// this cache too.
/// </summary>
public sealed class CudaKvSequence : IKvSequence, IKvMemoryReport, IDisposable, IDeviceKvSequence
{
    private readonly CudaKvCache _cache;
    private readonly bool _ownsCache;
    private readonly CudaContext _ctx;
    private readonly ModelKernels _kernels;
    private readonly KvShape _shape;
    private readonly RopeParams _rope;
    private readonly int[] _blocks;                   // logical block -> physical block of the pool
    private int _held;                                // blocks taken
    private readonly DeviceBuffer? _bt;               // the block table on the device
    private readonly DeviceBuffer[] _sinkK, _sinkV;   // KVQuant: per layer, the sink tokens' f16 pre-RoPE copies
    private readonly NuqLayerCache[]? _contiguous;    // KVQuant in the contiguous decode layout (decode_attention.cu)
    private readonly DeviceArena? _contiguousArena;   // all layers' contiguous arrays in one allocation
    private readonly DecodeAttention? _contiguousAttention;
    private readonly ulong[] _pendK, _pendV;          // the chunk's rows (contiguous layout: encoded at attention; NuqPrefill: f16 rows)
    private readonly int[] _pendN;                    // tokens of the chunk whose rows _pendK/_pendV hold, per layer
    private readonly DeviceBuffer _part;
    private readonly int[] _count;
    private readonly int _maxStates;
    private readonly HostStaging _staging;            // the host-span methods' device buffers

    /// <summary>The most split partial states one attention call writes (query rows x splits, per query head): the
    /// split plan's cap (<see cref="AttentionSplit.For"/>); a sharded sequence plans with the same number so that its
    /// splits are the unsharded ones (Distributed/ShardSplitPlan).</summary>
    internal const int MaxSplitStates = 1024;

    public int Length { get; private set; }
    /// <summary>Tokens this sequence has room for.</summary>
    public long Capacity { get; }
    public KvCacheConfig Config => _cache.Config;
    public CudaKvCache Cache => _cache;

    internal CudaKvSequence(CudaKvCache cache, int maxTokens, bool ownsCache)
    {
        if (maxTokens <= 0 || maxTokens > cache.MaxTokens)
            throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, $"a sequence of this cache holds 1 to {cache.MaxTokens} tokens");
        _cache = cache;
        _ownsCache = ownsCache;
        _ctx = cache.Context;
        _kernels = cache.Kernels;
        _shape = cache.Shape;
        _rope = cache.Rope;
        Capacity = (maxTokens + CudaKvCache.BlockTokens - 1L) / CudaKvCache.BlockTokens * CudaKvCache.BlockTokens;
        _count = new int[_shape.Layers];
        _blocks = new int[Capacity / CudaKvCache.BlockTokens];
        _pendK = new ulong[_shape.Layers];
        _pendV = new ulong[_shape.Layers];
        _pendN = new int[_shape.Layers];
        _sinkK = new DeviceBuffer[_shape.Layers];
        _sinkV = new DeviceBuffer[_shape.Layers];
        _maxStates = MaxSplitStates;
        _staging = new HostStaging(_ctx);
        int sink = Config.SinkTokens;
        try
        {
            if (cache.ContiguousLayout is { } layout)
            {
                var dk = cache.ContiguousKernels!();
                _contiguous = new NuqLayerCache[_shape.Layers];
                var decodeShape = new DecodeShape(_shape.KvHeads, _shape.GroupSize, _shape.HeadDim);
                _contiguousArena = new DeviceArena(_ctx, cache.Codecs!.Sum(c =>
                    DeviceArena.SizeFor(NuqLayerCache.ArraySizes(decodeShape, c.Keys[0].Spec.Bits, Capacity, sink, layout))));
                for (int l = 0; l < _shape.Layers; l++)
                {
                    var (keys, values) = cache.Codecs![l];
                    var kz = new float[_shape.KvDim];
                    var kr = new float[_shape.KvDim];
                    for (int h = 0; h < _shape.KvHeads; h++)
                    {
                        keys[h].Zeros.CopyTo(kz.AsSpan(h * _shape.HeadDim));
                        keys[h].Ranges.CopyTo(kr.AsSpan(h * _shape.HeadDim));
                    }
                    var profile = new NuqLayerProfile(_shape.KvHeads, _shape.HeadDim, kz, kr, keys[0].Codebook, values[0].Codebook);
                    _contiguous[l] = new NuqLayerCache(dk, decodeShape, profile, Capacity, sink, layout, _contiguousArena);
                }
                _contiguousAttention = new DecodeAttention(dk, _shape.Rope.Base);
            }
            else
            {
                _bt = _ctx.Allocate(_blocks.Length * 4L);
                if (cache.Nuq != null)
                    for (int l = 0; l < _shape.Layers; l++)
                    {
                        _sinkK[l] = _ctx.Allocate((long)_shape.KvHeads * Math.Max(sink, 1) * _shape.HeadDim * 2);
                        _sinkV[l] = _ctx.Allocate((long)_shape.KvHeads * Math.Max(sink, 1) * _shape.HeadDim * 2);
                    }
            }
            _part = _ctx.Allocate((long)_maxStates * _shape.Heads * (_shape.HeadDim + 2) * 4);
        }
        catch
        {
            Dispose();   // a sequence that could not be built gives back what it had taken
            throw;
        }
    }

    /// <summary>What this cache can store: f16 keys and values, or KVQuant pre-RoPE per-channel nuq keys with per-token
    /// nuq values (returns their CPU codecs per layer); every token (no policy). Builds the layout plan the CPU cache
    /// uses (<see cref="KvLayoutPlan"/>) and reads it.</summary>
    internal static (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[]? Check(KvCacheConfig config, KvShape shape)
    {
        CheckShape(shape);
        return Check(KvLayoutPlan.Build(shape, config));
    }

    /// <summary>The same from a layout plan: its codecs decide, by type, what the device holds.</summary>
    internal static (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[]? Check(KvLayoutPlan plan)
    {
        var (shape, config) = (plan.Shape, plan.Config);
        CheckShape(shape);
        if (config.Policy != null)
            throw new KvSpecException($"KV policy '{config.Policy.Name}' is not available on the CUDA device (every token is kept there)");
        if (plan.Keys.Codec is F16Codec && plan.Values.Codec is F16Codec) return null;
        var layers = new (NuqChannelCodec[], NuqTokenCodec[])[shape.Layers];
        for (int l = 0; l < shape.Layers; l++)
            layers[l] = NuqDeviceLayer.Codecs(plan, l)
                ?? throw new KvSpecException($"KV format '{config.Name}' is not available on the CUDA device: it stores f16, or KVQuant nuqB[-F%] " +
                                             "with pre-RoPE per-channel keys and per-token values (optionally :mixed, with --sink)");
        return layers;
    }

    /// <summary>The contiguous decode layout when it holds exactly these codecs: head dim 128, 1 or 4 query heads per KV
    /// head, adjacent-pair RoPE over the whole head without scaling, 2-4 bits, one codebook per layer (no Q-Norm), and
    /// either 4 key slots with 1 value outlier per tail (nuqB-1% at D = 128) or none (nuqB); sink 0 or 1.</summary>
    internal static NuqLayout? ContiguousLayout((NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[] layers, KvShape shape, int sink)
    {
        var r = shape.Rope;
        if (shape.HeadDim != 128 || shape.GroupSize is not (1 or 4) || r.Style != RopeStyle.Normal || r.RopeDims != 128
            || r.Scale != 1f || sink > 1)
            return null;
        NuqLayout? layout = null;
        foreach (var (keys, values) in layers)
        {
            var k0 = keys[0];
            var v0 = values[0];
            if (k0.Spec.Bits is < 2 or > 4 || v0.Spec.Bits != k0.Spec.Bits) return null;
            NuqLayout l = (k0.OutlierSlots, v0.OutliersPerTail) switch
            {
                (DecodeShape.KeySlots, 1) => NuqLayout.Slots,
                (0, 0) => NuqLayout.Dense,
                _ => (NuqLayout)(-1),
            };
            if ((int)l < 0 || (layout != null && layout != l)) return null;
            layout = l;
            for (int h = 0; h < keys.Length; h++)
                if (!keys[h].DecodeLevels.SequenceEqual(k0.Codebook.DecodeLevels(false)) || !keys[h].Codebook.Levels.AsSpan().SequenceEqual(k0.Codebook.Levels)
                    || !values[h].DecodeLevels.SequenceEqual(v0.Codebook.DecodeLevels(false)) || !values[h].Codebook.Levels.AsSpan().SequenceEqual(v0.Codebook.Levels))
                    return null;
        }
        return layout;
    }

    internal static void CheckShape(KvShape shape)
    {
        if (shape.HeadDim != 64 && shape.HeadDim != 128)
            throw new NotSupportedException($"the CUDA attention kernels are built for head dim 64 and 128 (this model: {shape.HeadDim})");
        if (shape.GroupSize < 1 || shape.GroupSize > 8)
            throw new NotSupportedException($"the CUDA attention kernels take 1 to 8 query heads per KV head (this model: {shape.GroupSize})");
    }

    public void BeginChunk(ReadOnlySpan<int> tokens) { }

    /// <summary>Device-side append: <paramref name="k"/> (pre-RoPE) and <paramref name="v"/> are f32 [n][KV dim].</summary>
    internal void AppendDevice(int layer, ulong k, ulong v, int n)
    {
        int slot = _count[layer];
        if (slot + n > Capacity)
            throw new InvalidOperationException($"CUDA KV cache full: {slot} + {n} tokens exceed its capacity of {Capacity} (create the sequence with a larger maxTokens)");
        _pendK[layer] = k;   // the contiguous layout: encoded in AttendDevice; a NuqPrefill chunk's f16 rows: read there too
        _pendV[layer] = v;
        _pendN[layer] = n;
        if (_contiguous != null)
        {
            _count[layer] = slot + n;
            return;
        }
        Hold(slot + n);
        if (_cache.Nuq is { } nuq)
        {
            _kernels.AppendNuqKeys(k, n, _shape.KvHeads, _shape.HeadDim, slot, nuq[layer], Config.SinkTokens, _sinkK[layer].Pointer, _bt!.Pointer);
            _kernels.AppendNuqValues(v, n, _shape.KvHeads, _shape.HeadDim, slot, nuq[layer], Config.SinkTokens, _sinkV[layer].Pointer, _bt.Pointer);
        }
        else _kernels.AppendF16(k, v, n, _shape.KvHeads, _rope, _cache.FirstPosition + slot, slot, _cache.MaxTokens, _cache.K[layer], _cache.V[layer], _bt!.Pointer);
        _count[layer] = slot + n;
    }

    /// <summary>Takes pool blocks until the sequence has room for <paramref name="tokens"/> tokens; the new block-table
    /// entries go to the device.</summary>
    private void Hold(int tokens)
    {
        int need = (tokens + CudaKvCache.BlockTokens - 1) / CudaKvCache.BlockTokens;
        int first = _held;
        while (_held < need) _blocks[_held++] = _cache.Rent();
        if (_held > first) _bt!.CopyFrom(_blocks.AsSpan(first, _held - first), first * 4L);
    }

    /// <summary>Device-side causal attention of the last <paramref name="n"/> appended tokens: q f32 [n][Q dim]
    /// (post-RoPE), output f32 [n][Q dim].</summary>
    internal void AttendDevice(int layer, ulong q, int n, ulong output)
    {
        long count = _count[layer];
        if (n > 1 && DecodesOnce(layer, n) && _cache.PrefillScratch(count) is { } scratch)
        {
            AttendDecodedOnce(layer, q, n, output, count, scratch);
            return;
        }
        if (_contiguous != null)
        {
            AttendContiguous(layer, q, n, output, count);
            return;
        }
        var split = AttentionSplit.For(count, n, _shape.KvHeads, _ctx.Device.Multiprocessors, _maxStates);
        var nuq = _cache.Nuq?[layer];
        var sinks = nuq != null ? (_sinkK[layer].Pointer, _sinkV[layer].Pointer) : (0UL, 0UL);
        if (n > 1)   // a prefill chunk: the tiled kernel reads each key once per block of query rows
        {
            _kernels.AttentionTile(q, nuq == null ? _cache.K[layer] : null, nuq == null ? _cache.V[layer] : null, nuq, _cache.Table, _cache.MaxTokens,
                _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, count, n, split, _shape.ScoreScale, _part.Pointer, output, Config.SinkTokens, sinks, _rope,
                _bt!.Pointer);
            return;
        }
        if (nuq != null)
        {
            _kernels.AttentionNuq(q, nuq, _cache.Table!, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, count, n, split, _shape.ScoreScale,
                _part.Pointer, output, Config.SinkTokens, sinks, _rope, _bt!.Pointer);
            return;
        }
        _kernels.AttentionF16(q, _cache.K[layer], _cache.V[layer], _cache.MaxTokens, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, count, n, split,
            _shape.ScoreScale, _part.Pointer, output, _bt!.Pointer);
    }

    /// <summary>Whether this prefill chunk of <paramref name="n"/> tokens takes the decode-once path (<see cref="NuqPrefill.F16Chunk"/>
    /// or <see cref="NuqPrefill.Decoded"/>): a KVQuant cache starting at position 0, tensor-core prefill (its tiles are f16
    /// anyway; the f32 tiles stay exact), and the chunk's rows still at the addresses its append gave.</summary>
    private bool DecodesOnce(int layer, int n) =>
        _kernels.NuqPrefill != NuqPrefill.Tiles && _kernels.TensorCorePrefill && (_contiguous != null || _cache.Nuq != null)
        && _cache.FirstPosition == 0 && _pendN[layer] == n;

    /// <summary>
    /// A prefill chunk at f16 speed: the chunk encoded (the contiguous layout: one launch a side, not a token at a time;
    /// the paged layout encoded it at append), the past decoded once into the cache's <see cref="PrefillScratch"/> (f16
    /// rows laid out as the f16 cache, post-RoPE keys), the chunk's own rows written there as the f16 cache writes them
    /// (<see cref="NuqPrefill.F16Chunk"/>) or decoded with the past (<see cref="NuqPrefill.Decoded"/>), then the f16
    /// tensor-core kernel over the rows. The decode costs one read of the codes and one f16 write per chunk and layer,
    /// where <see cref="NuqPrefill.Tiles"/> decodes and rotates every tile once per 64 query rows inside attention.
    /// Where the device has no room for the scratch, the chunk takes the tiles path (the same codes either way).
    /// </summary>
    private void AttendDecodedOnce(int layer, ulong q, int n, ulong output, long count, PrefillScratch scratch)
    {
        long past = count - n;
        var mode = _kernels.NuqPrefill;
        if (_contiguous != null) EncodeChunk(layer, n, past);
        long decoded = mode == NuqPrefill.Decoded ? count : past;
        if (_contiguous != null) _kernels.ContiguousToF16(_contiguous[layer], _cache.Table!, Config.SinkTokens, _rope, _shape.KvHeads, decoded, scratch);
        else
            _kernels.NuqToF16(_cache.Nuq![layer], _cache.Table!, Config.SinkTokens, (_sinkK[layer].Pointer, _sinkV[layer].Pointer), _rope, _bt!.Pointer,
                _cache.MaxTokens, _shape.KvHeads, decoded, scratch);
        if (mode == NuqPrefill.F16Chunk)
            _kernels.AppendF16(_pendK[layer], _pendV[layer], n, _shape.KvHeads, _rope, past, past, scratch.Tokens, scratch.K, scratch.V, scratch.BlockTable);
        var split = AttentionSplit.For(count, n, _shape.KvHeads, _ctx.Device.Multiprocessors, _maxStates);
        _kernels.AttentionTileF16(q, scratch.K, scratch.V, scratch.Tokens, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, count, n, split,
            _shape.ScoreScale, _part.Pointer, output, scratch.BlockTable);
    }

    /// <summary>The contiguous layout's fused chunk append: tokens at sink positions to the sink's f16 copies, the rest
    /// in one launch per side (<see cref="NuqLayerCache.AppendRows"/>: the same bytes as token by token).</summary>
    private void EncodeChunk(int layer, int n, long first)
    {
        var cache = _contiguous![layer];
        var (sinkK, sinkV) = cache.SinkBuffers;
        long kvRow = (long)_shape.KvDim * 4;
        int lead = (int)Math.Clamp(Config.SinkTokens - first, 0, n);
        for (int t = 0; t < lead; t++)
            _kernels.SinkWrite(_pendK[layer] + (ulong)(t * kvRow), _pendV[layer] + (ulong)(t * kvRow), _shape.KvHeads, _shape.HeadDim, first + t,
                Config.SinkTokens, sinkK, sinkV);
        if (n > lead) cache.AppendRows(_pendK[layer] + (ulong)(lead * kvRow), _pendV[layer] + (ulong)(lead * kvRow), n - lead);
    }

    /// <summary>
    /// The split partials only (no merge) of the last <paramref name="n"/> query rows <paramref name="q"/> over this
    /// sequence's first tokens, as the kernels of <see cref="AttendDevice"/> compute them, into <paramref name="part"/>
    /// ([row][split slot][head dim + 2], <see cref="AttentionSplit.PartStride"/> slots per row): row t sees the tokens
    /// before <paramref name="count"/> - n + t + 1 (none when that is 0 or less: an empty state, sum 0), cut by
    /// <paramref name="split"/>, whose ranges must end within the tokens held (Distributed/ShardedKvSequence: the
    /// count is the whole sequence's, shifted to this shard's first position).
    /// </summary>
    internal void AttendPartial(int layer, ulong q, int n, long count, AttentionSplit split, ulong part)
    {
        if (_contiguous != null) throw new NotSupportedException("partial attention states over the contiguous decode layout");
        var nuq = _cache.Nuq?[layer];
        var sinks = nuq != null ? (_sinkK[layer].Pointer, _sinkV[layer].Pointer) : (0UL, 0UL);
        if (n > 1)
            _kernels.AttentionTile(q, nuq == null ? _cache.K[layer] : null, nuq == null ? _cache.V[layer] : null, nuq, _cache.Table, _cache.MaxTokens,
                _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, count, n, split, _shape.ScoreScale, part, 0, Config.SinkTokens, sinks, _rope,
                _bt!.Pointer);
        else if (nuq != null)
            _kernels.AttentionNuq(q, nuq, _cache.Table!, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, count, n, split, _shape.ScoreScale,
                part, 0, Config.SinkTokens, sinks, _rope, _bt!.Pointer);
        else
            _kernels.AttentionF16(q, _cache.K[layer], _cache.V[layer], _cache.MaxTokens, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, count, n, split,
                _shape.ScoreScale, part, 0, _bt!.Pointer);
    }

    /// <summary>The stored bytes of tokens [<paramref name="from"/>, from + <paramref name="count"/>) of one layer of the
    /// paged layout, array by array (f16 keys and values, or every per-token array of the KVQuant layout), KV head by KV
    /// head, token by token (for checks: Distributed/ShardedKvSequence shards hold the unsharded cache's bytes).</summary>
    internal byte[] StoredBytes(int layer, int from, int count)
    {
        if (_contiguous != null) throw new NotSupportedException("stored bytes of the contiguous decode layout");
        if (from < 0 || count < 0 || from + count > _count[layer])
            throw new ArgumentOutOfRangeException(nameof(count), count, $"tokens {from}..{from + count} of a layer that holds {_count[layer]}");
        (DeviceBuffer Buffer, int SlotBytes)[] arrays = _cache.Nuq is { } nuq
            ? nuq[layer].PagedArrays
            : [(_cache.K[layer], _shape.HeadDim * 2), (_cache.V[layer], _shape.HeadDim * 2)];
        _ctx.Synchronize();
        using var bytes = new MemoryStream();
        foreach (var (buffer, slot) in arrays)
        {
            var all = buffer.Download<byte>((long)_shape.KvHeads * _cache.MaxTokens * slot);
            for (int h = 0; h < _shape.KvHeads; h++)
                for (int t = from; t < from + count; t++)
                {
                    long phys = (long)_blocks[t / CudaKvCache.BlockTokens] * CudaKvCache.BlockTokens + t % CudaKvCache.BlockTokens;
                    bytes.Write(all, (int)(((long)h * _cache.MaxTokens + phys) * slot), slot);
                }
        }
        return bytes.ToArray();
    }

    /// <summary>Whether a single-token step over this sequence can be replayed from a CUDA graph (<see cref="DecodeGraph"/>):
    /// the paged layouts (f16 and the model's KVQuant layout), whose kernels read position, slot and count from a
    /// <see cref="DecodeStep"/> on the device. Not the contiguous decode layout (its appends keep counters on the host).</summary>
    internal bool GraphCapable => _contiguous == null && !_disposed;

    /// <summary>The split of the attention of a one-token step appended at <see cref="Length"/> (what
    /// <see cref="AttendDevice"/> would choose for it).</summary>
    internal AttentionSplit DecodeSplit() => AttentionSplit.For(Length + 1L, 1, _shape.KvHeads, _ctx.Device.Multiprocessors, _maxStates);

    /// <summary>The host side of a one-token step whose kernels run from a graph: checks room, takes the block the slot
    /// needs (its table entry goes up now, before the replay) and says what the kernels read (<see cref="DecodeStep"/>).
    /// <see cref="EndDecodeStep"/> then counts the token in every layer, as the direct appends would have.</summary>
    internal DecodeStep BeginDecodeStep(int token)
    {
        if (!GraphCapable) throw new InvalidOperationException("a decode step from a CUDA graph over the contiguous decode layout or a disposed sequence");
        for (int l = 0; l < _count.Length; l++)
            if (_count[l] != Length) throw new InvalidOperationException($"a decode step in the middle of a chunk: layer {l} holds {_count[l]} tokens, the sequence {Length}");
        if (Length + 1L > Capacity)
            throw new InvalidOperationException($"CUDA KV cache full: {Length} + 1 tokens exceed its capacity of {Capacity} (create the sequence with a larger maxTokens)");
        var step = DecodeStep.For(token, Length, _cache.FirstPosition);
        Hold(Length + 1);
        return step;
    }

    /// <summary>The device address of this sequence's block table (paged layouts).</summary>
    internal ulong BlockTablePointer => _bt?.Pointer ?? throw new InvalidOperationException("the contiguous decode layout has no block table");

    /// <summary>The f16 copies of <paramref name="layer"/>'s sink tokens (KVQuant; 0 for an f16 cache).</summary>
    internal (ulong K, ulong V) SinkPointers(int layer) => (_sinkK[layer]?.Pointer ?? 0, _sinkV[layer]?.Pointer ?? 0);

    internal void EndDecodeStep()
    {
        for (int l = 0; l < _count.Length; l++) _count[l]++;
    }

    /// <summary>The append of <see cref="AppendDevice"/> for one token, position and slot read from the
    /// <see cref="DecodeStep"/> at <paramref name="at"/> (recorded into a graph; no host bookkeeping), and the RoPE of
    /// the step's query <paramref name="q"/> at its query position: in the f16 append's own launch, before the KVQuant
    /// appends otherwise.</summary>
    internal void AppendStep(int layer, ulong q, ulong k, ulong v, ulong at)
    {
        if (_cache.Nuq is { } nuq)
        {
            _kernels.RopeAt(q, 1, _shape.Heads, _rope, DecodeStep.Field(at, DecodeStep.QueryPositionIndex));
            _kernels.AppendNuqKeys(k, 1, _shape.KvHeads, _shape.HeadDim, 0, nuq[layer], Config.SinkTokens, _sinkK[layer].Pointer, _bt!.Pointer, at);
            _kernels.AppendNuqValues(v, 1, _shape.KvHeads, _shape.HeadDim, 0, nuq[layer], Config.SinkTokens, _sinkV[layer].Pointer, _bt.Pointer, at);
        }
        else _kernels.AppendF16(k, v, 1, _shape.KvHeads, _rope, 0, 0, _cache.MaxTokens, _cache.K[layer], _cache.V[layer], _bt!.Pointer, at,
            new QueryRope(q, _shape.GroupSize, 0));
    }

    /// <summary>The attention of <see cref="AttendDevice"/> for one query token with <paramref name="split"/> (the step's
    /// <see cref="DecodeSplit"/>), the token count read from the <see cref="DecodeStep"/> at <paramref name="at"/>; the
    /// merge also writes the output rounded to f16 at <paramref name="outputF16"/> when given (the f16 output
    /// projection's input, one launch fewer).</summary>
    internal void AttendStep(int layer, ulong q, ulong output, ulong outputF16, AttentionSplit split, ulong at)
    {
        if (_cache.Nuq?[layer] is { } nuq)
            _kernels.AttentionNuq(q, nuq, _cache.Table!, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, 0, 1, split, _shape.ScoreScale,
                _part.Pointer, output, Config.SinkTokens, (_sinkK[layer].Pointer, _sinkV[layer].Pointer), _rope, _bt!.Pointer, at, outputF16);
        else
            _kernels.AttentionF16(q, _cache.K[layer], _cache.V[layer], _cache.MaxTokens, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, 0, 1, split,
                _shape.ScoreScale, _part.Pointer, output, _bt!.Pointer, at, outputF16);
    }

    void IDeviceKvSequence.AppendDevice(int layer, ulong k, ulong v, int n) => AppendDevice(layer, k, v, n);
    void IDeviceKvSequence.AttendDevice(int layer, ulong q, int n, ulong output) => AttendDevice(layer, q, n, output);

    /// <summary>Tokens layer <paramref name="layer"/> holds (between appends of a chunk, ahead of <see cref="Length"/>).</summary>
    internal int Count(int layer) => _count[layer];

    /// <summary>The contiguous layout's decode kernels take one query token: for a decode step each token is encoded
    /// (or, at a sink position, copied to the sink) right before its own query attends, which keeps attention causal; a
    /// prefill chunk is encoded whole, then the tiled kernel reads the contiguous layout with a causal mask per row.</summary>
    private void AttendContiguous(int layer, ulong q, int n, ulong output, long count)
    {
        var cache = _contiguous![layer];
        var (sinkK, sinkV) = cache.SinkBuffers;
        long kvRow = (long)_shape.KvDim * 4, qRow = (long)_shape.QDim * 4;
        if (n > 1)
        {
            for (int t = 0; t < n; t++)
            {
                long pos = count - n + t;
                ulong kt = _pendK[layer] + (ulong)(t * kvRow), vt = _pendV[layer] + (ulong)(t * kvRow);
                if (pos < Config.SinkTokens) _kernels.SinkWrite(kt, vt, _shape.KvHeads, _shape.HeadDim, pos, Config.SinkTokens, sinkK, sinkV);
                else cache.Append(kt, vt, 1);
            }
            var split = AttentionSplit.For(count, n, _shape.KvHeads, _ctx.Device.Multiprocessors, _maxStates);
            _kernels.AttentionTileContiguous(q, cache, _cache.Table!, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, count, n, split, _shape.ScoreScale,
                _part.Pointer, output, Config.SinkTokens, _rope);
            return;
        }
        for (int t = 0; t < n; t++)
        {
            long pos = count - n + t;
            ulong kt = _pendK[layer] + (ulong)(t * kvRow), vt = _pendV[layer] + (ulong)(t * kvRow);
            if (pos < Config.SinkTokens) _kernels.SinkWrite(kt, vt, _shape.KvHeads, _shape.HeadDim, pos, Config.SinkTokens, sinkK, sinkV);
            else cache.Append(kt, vt, 1);
            ulong qt = q + (ulong)(t * qRow), ot = output + (ulong)(t * qRow);
            if (cache.Tokens == 0) _kernels.SinkOnly(sinkV, _shape.Heads, _shape.GroupSize, _shape.HeadDim, Config.SinkTokens, ot);
            else _contiguousAttention!.Run(cache, qt, ot);
        }
    }

    /// <summary>
    /// Makes this empty sequence a device copy of <paramref name="source"/>'s tokens (same model and KV format; a fork:
    /// both go on independently). Paged layouts: this sequence takes blocks of its own pool and the source's blocks are
    /// copied into them (every KV head and per-token array), with the sink copies; the contiguous decode layout:
    /// every array of every layer (both sequences made with the same capacity).
    /// </summary>
    public void CopyFrom(CudaKvSequence source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (Length != 0 || _count.Any(c => c != 0)) throw new InvalidOperationException($"copy into a sequence that holds {Length} tokens");
        if (!ReferenceEquals(source._kernels, _kernels) || source.Config.Name != Config.Name || source.Config.SinkTokens != Config.SinkTokens
            || (source._contiguous == null) != (_contiguous == null) || (source._cache.Nuq == null) != (_cache.Nuq == null))
            throw new ArgumentException($"a {source.Config.Name} sequence cannot be copied into a {Config.Name} sequence of {(ReferenceEquals(source._kernels, _kernels) ? "this" : "another")} model");
        if (source._count.Any(c => c != source.Length)) throw new InvalidOperationException("copy of a sequence in the middle of a chunk");
        if (source.Length > Capacity) throw new InvalidOperationException($"CUDA KV cache full: a copy of {source.Length} tokens exceeds its capacity of {Capacity}");
        _ctx.MakeCurrent();
        if (_contiguous != null)
            for (int l = 0; l < _contiguous.Length; l++) _contiguous[l].CopyFrom(source._contiguous![l]);
        else
        {
            Hold(source.Length);
            int blocks = (source.Length + CudaKvCache.BlockTokens - 1) / CudaKvCache.BlockTokens;
            for (int l = 0; l < _shape.Layers; l++)
            {
                if (_cache.Nuq is { } nuq)
                {
                    var from = source._cache.Nuq![l].PagedArrays;
                    var to = nuq[l].PagedArrays;
                    for (int a = 0; a < to.Length; a++) CopyBlocks(from[a].Buffer, source._cache.MaxTokens, source._blocks, to[a].Buffer, _cache.MaxTokens, to[a].SlotBytes, blocks);
                    _sinkK[l].CopyFromDevice(source._sinkK[l]);
                    _sinkV[l].CopyFromDevice(source._sinkV[l]);
                }
                else
                {
                    int slot = _shape.HeadDim * 2;
                    CopyBlocks(source._cache.K[l], source._cache.MaxTokens, source._blocks, _cache.K[l], _cache.MaxTokens, slot, blocks);
                    CopyBlocks(source._cache.V[l], source._cache.MaxTokens, source._blocks, _cache.V[l], _cache.MaxTokens, slot, blocks);
                }
            }
        }
        Array.Fill(_count, source.Length);
        Length = source.Length;
    }

    /// <summary>Copies logical blocks [0, blocks) of an array laid out [KV head][cap][slotBytes] from the source's physical
    /// blocks to this sequence's, one copy per KV head and run of blocks contiguous on both sides.</summary>
    private void CopyBlocks(DeviceBuffer src, long srcCap, int[] srcBlocks, DeviceBuffer dst, long dstCap, int slotBytes, int blocks)
    {
        const int bt = CudaKvCache.BlockTokens;
        for (int b = 0; b < blocks;)
        {
            int run = 1;
            while (b + run < blocks && srcBlocks[b + run] == srcBlocks[b] + run && _blocks[b + run] == _blocks[b] + run) run++;
            for (int h = 0; h < _shape.KvHeads; h++)
                dst.CopyFromDevice(src, ((long)h * srcCap + (long)srcBlocks[b] * bt) * slotBytes, ((long)h * dstCap + (long)_blocks[b] * bt) * slotBytes,
                    (long)run * bt * slotBytes);
            b += run;
        }
    }

    public void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n) => _staging.Append(this, layer, k, v, n, _shape.KvDim);

    public void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par) => _staging.Attend(this, layer, q, n, output, _shape.QDim);

    public void Commit(int n)
    {
        Length += n;
        for (int l = 0; l < _count.Length; l++)
            if (_count[l] != Length)
                throw new InvalidOperationException($"commit of {n} tokens: layer {l} holds {_count[l]} tokens, expected {Length}");
    }

    /// <summary>Bytes of the tokens held (codes, slots, scales; the sink's copies as staging); the device
    /// allocation itself is <see cref="DeviceBytes"/> (sized for <see cref="Capacity"/>).</summary>
    public KvMemory Memory()
    {
        if (_contiguous != null)
        {
            long held = _contiguous.Sum(c => c.BytesPerDecode);
            return new KvMemory(KvBytes.CodesOnly(held / 2), KvBytes.CodesOnly(held - held / 2), 0, Length, _shape.Layers * _shape.KvDim);
        }
        if (_cache.Nuq != null)
        {
            long held = _cache.BytesPerToken * Length;
            long sink = 2L * _shape.Layers * _shape.KvHeads * Math.Min(Config.SinkTokens, Length) * _shape.HeadDim * 2;
            return new KvMemory(KvBytes.CodesOnly(held / 2), KvBytes.CodesOnly(held - held / 2), sink, Length, _shape.Layers * _shape.KvDim);
        }
        long perSide = 2L * _shape.Layers * _shape.KvHeads * Length * _shape.HeadDim;
        return new KvMemory(KvBytes.CodesOnly(perSide), KvBytes.CodesOnly(perSide), 0, Length, _shape.Layers * _shape.KvDim);
    }

    /// <summary>Device bytes this sequence holds: its pool blocks (or its own contiguous-layout cache), sink copies
    /// and attention partials; with a cache of its own (<see cref="CudaTransformer.CreateSequence"/>), the whole pool.</summary>
    public long DeviceBytes =>
        (_ownsCache ? _cache.DeviceBytes : (long)_held * CudaKvCache.BlockTokens * _cache.BytesPerToken)
        + (_contiguousArena?.Bytes ?? 0) + _sinkK.Sum(b => b?.Bytes ?? 0) + _sinkV.Sum(b => b?.Bytes ?? 0)
        + (_bt?.Bytes ?? 0) + (_part?.Bytes ?? 0);

    private bool _disposed;

    public void Dispose()
    {
        _disposed = true;
        for (int i = 0; i < _held; i++) _cache.Return(_blocks[i]);
        _held = 0;
        foreach (var b in _sinkK) b?.Dispose();
        foreach (var b in _sinkV) b?.Dispose();
        if (_contiguous != null) foreach (var l in _contiguous) l?.Dispose();
        _contiguousArena?.Dispose();
        _contiguousAttention?.Dispose();
        _bt?.Dispose();
        _part?.Dispose();
        _staging?.Dispose();
        if (_ownsCache) _cache.Dispose();
    }
}
