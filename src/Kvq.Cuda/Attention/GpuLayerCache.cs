namespace Kvq.Cuda.Attention;

/// <summary>
/// One layer's KV cache in device memory in the GPU layout, filled on the device from the synthetic source
/// (kv_encode.cu's gen) and read by the decode kernels. Subclasses: <see cref="F16LayerCache"/> (post-RoPE keys) and
/// <see cref="NuqLayerCache"/> (KVQuant: pre-RoPE nuq keys with outlier slots, nuq values, f16 sink; or the dense
/// layout without outlier slots).
/// </summary>
public abstract class GpuLayerCache : IDisposable
{
    protected readonly List<DeviceBuffer> Buffers = new();
    /// <summary>Where the arrays come from when given (a sequence's one allocation for all its layers), else cuMemAlloc each.</summary>
    protected DeviceArena? Arena;
    public DecodeShape Shape { get; }
    public long Tokens { get; protected set; }
    public long Padded { get; }
    public int Sink { get; }
    public abstract string Name { get; }
    public abstract int KeyBits { get; }

    protected GpuLayerCache(DecodeShape shape, long tokens, int sink)
    {
        shape.Validate();
        Shape = shape;
        Tokens = tokens;
        Sink = sink;
        Padded = DecodeShape.Padded(tokens);
    }

    /// <summary>Device bytes this cache holds.</summary>
    public long DeviceBytes => Buffers.Sum(b => b.Bytes);

    /// <summary>Every buffer's bytes, in allocation order (tests compare two caches built different ways).</summary>
    public byte[] DownloadAll()
    {
        var all = new byte[DeviceBytes];
        long at = 0;
        foreach (var b in Buffers)
        {
            b.CopyTo(all.AsSpan((int)at, (int)b.Bytes));
            at += b.Bytes;
        }
        return all;
    }

    /// <summary>Makes this cache a device copy of <paramref name="source"/> (every array and the token count): a fork of
    /// a sequence's cache. Both must have been made alike (same layout, shape, capacity and sink).</summary>
    internal void CopyFrom(GpuLayerCache source)
    {
        if (source.GetType() != GetType() || source.Buffers.Count != Buffers.Count || source.Name != Name || source.Sink != Sink)
            throw new ArgumentException($"a {source.Name} cache cannot be copied into a {Name} cache");
        for (int i = 0; i < Buffers.Count; i++)
            if (Buffers[i].Bytes != source.Buffers[i].Bytes)
                throw new ArgumentException($"caches of different capacities ({source.Padded} and {Padded} tokens) cannot be copied into each other");
        for (int i = 0; i < Buffers.Count; i++) Buffers[i].CopyFromDevice(source.Buffers[i]);
        Tokens = source.Tokens;
    }

    /// <summary>Bytes one decode pass must read from this cache (the stream's real tokens, not the padding).</summary>
    public abstract long BytesPerDecode { get; }

    protected DeviceBuffer Alloc(CudaContext ctx, long bytes)
    {
        var b = Arena?.Take(Math.Max(bytes, 16)) ?? ctx.Allocate(Math.Max(bytes, 16));
        b.Fill(0);   // padding must decode to finite values: masked tokens still meet p = 0 in the value sum
        Buffers.Add(b);
        return b;
    }

    internal abstract void AddAttentionArgs(KernelArgs args, ulong q);
    internal virtual (ulong SinkK, ulong SinkV) SinkBuffers => (0, 0);

    public void Dispose()
    {
        foreach (var b in Buffers) b.Dispose();
        Buffers.Clear();
    }
}

public sealed class F16LayerCache : GpuLayerCache
{
    private readonly DeviceBuffer _k, _v;
    public override string Name => "f16";
    public override int KeyBits => 16;

    public F16LayerCache(DecodeKernels kernels, DecodeShape shape, long tokens, uint seedK, uint seedV, double log2Base)
        : base(shape, tokens, 0)
    {
        var ctx = kernels.Context;
        long elems = shape.KvHeads * Padded * shape.HeadDim;
        try
        {
            _k = Alloc(ctx, elems * 2);
            _v = Alloc(ctx, elems * 2);
        }
        catch
        {
            Dispose();   // a cache that could not be built gives back what it had already taken
            throw;
        }
        Write(kernels, seedK, 1, log2Base, _k);
        Write(kernels, seedV, 0, log2Base, _v);
    }

    private void Write(DecodeKernels kernels, uint seed, int rope, double log2Base, DeviceBuffer dst)
    {
        long total = Shape.KvHeads * Padded * Shape.HeadDim;
        using var a = new KernelArgs();
        a.Add(seed).Add(Shape.KvHeads).Add(0L).Add(Tokens).Add(Padded).Add(rope).Add(log2Base).Add(dst);
        kernels.WriteF16().Launch(LaunchShape.Grid1((total + 255) / 256, 256), a);
    }

    public override long BytesPerDecode => 2L * Shape.KvHeads * Tokens * Shape.HeadDim * 2;

    /// <summary>Device bytes of one layer's f16 cache of <paramref name="tokens"/> tokens (padded to whole chunks).</summary>
    public static long BytesFor(DecodeShape shape, long tokens) => 2L * shape.KvHeads * DecodeShape.Padded(tokens) * shape.HeadDim * 2;

    internal override void AddAttentionArgs(KernelArgs args, ulong q) => args.Add(q).Add(_k).Add(_v);
}

/// <summary>The GPU nuq layouts: <see cref="Slots"/> = nuqB-1% (4 key and 2 value outlier slots per token and KV
/// head), <see cref="Dense"/> = nuqB (none), <see cref="SparseKeys"/> = the dense codes plus per-chunk records of key
/// outliers (at most 2 per token like nuqB-0.1%, at most 47 per 256-token chunk and KV head; values dense).</summary>
public enum NuqLayout { Slots, Dense, SparseKeys }

/// <summary>
/// KVQuant's layout on the device. nuqB-1% (the default): <see cref="DecodeShape.KeySlots"/> key outlier slots and
/// <see cref="DecodeShape.ValueSlots"/> value slots per token and KV head. Dense (<see cref="NuqLayout.Dense"/>, the CPU spec
/// <c>nuqB</c> without an outlier fraction): no slots at all, every key clamped into its code and the value zero and
/// range taken from all of the token's values: 2 x D x B / 8 + 4 bytes per token and KV head (68 at 2 bits), so
/// that 1M tokens of a 7B-shaped model fit one 80 GB card beside the weights. Sparse keys: the dense layout plus
/// 192 bytes per 256-token chunk and KV head of key outliers (0.75 B per token and KV head).
/// </summary>
public sealed class NuqLayerCache : GpuLayerCache
{
    private readonly DeviceBuffer _kcodes, _kz, _kr, _kcb, _vcodes, _vzr, _vcb, _sinkK, _sinkV;
    private readonly DeviceBuffer? _kslotv, _kslotc, _vslotv, _vslotc, _klist;
    public NuqLayerProfile Profile { get; }
    /// <summary>The KVQuant spec this layout implements on the CPU (nuqB-1%, or nuqB when dense); the sparse layout:
    /// "nuqB-0.1%k" (<see cref="KeySpec"/> for keys, capped per chunk, <see cref="ValueSpec"/> for values).</summary>
    public override string Name => Layout == NuqLayout.SparseKeys ? $"{KeySpec}k" : KeySpec;
    /// <summary>The CPU specs whose codecs decode the keys and the values to what this cache holds (the sparse
    /// layout's keys also drop what overflows a chunk's record).</summary>
    public string KeySpec => Layout switch { NuqLayout.Slots => $"nuq{Profile.Bits}-1%", NuqLayout.Dense => $"nuq{Profile.Bits}", _ => $"nuq{Profile.Bits}-0.1%" };
    public string ValueSpec => Layout == NuqLayout.Slots ? $"nuq{Profile.Bits}-1%" : $"nuq{Profile.Bits}";
    public override int KeyBits => Profile.Bits;
    public NuqLayout Layout { get; }
    public bool Dense => Layout == NuqLayout.Dense;
    public int KeySlots => Layout == NuqLayout.Slots ? DecodeShape.KeySlots : 0;
    public int ValueSlots => Layout == NuqLayout.Slots ? DecodeShape.ValueSlots : 0;
    public int KeyListWords => Layout == NuqLayout.SparseKeys ? DecodeShape.KeyListWords : 0;

    private readonly DecodeKernels _kernels;
    private readonly DeviceBuffer _kmids, _vmids;

    /// <summary>A cache filled on the device from the synthetic source (kv_encode.cu gen): stream tokens 0 .. tokens-1
    /// at positions sink .. sink + tokens - 1, and the sink's f16 copies of positions 0 .. sink-1.</summary>
    public NuqLayerCache(DecodeKernels kernels, DecodeShape shape, NuqLayerProfile profile, long tokens, int sink,
        uint seedK, uint seedV, NuqLayout layout = NuqLayout.Slots) : this(kernels, shape, profile, tokens, sink, layout)
    {
        int b = profile.Bits, h = shape.KvHeads;
        var grid = new LaunchShape((uint)((Padded / DecodeShape.Tile + 3) / 4), (uint)h, 1, 128);
        using (var a = new KernelArgs())
        {
            a.Add(seedK).Add(sink).Add(tokens).Add(Padded).Add(_kz).Add(_kr).Add(_kmids).Add(_kcodes).Add(Ptr(_kslotv)).Add(Ptr(_kslotc));
            kernels.EncodeKeys(b, KeySlots == 0).Launch(grid, a);
        }
        if (_klist != null)
            using (var a = new KernelArgs())
            {
                a.Add(seedK).Add(sink).Add(tokens).Add(Padded).Add(_kz).Add(_kr).Add(_klist);
                kernels.EncodeKeyList().Launch(new LaunchShape((uint)((Padded / DecodeShape.Chunk + 3) / 4), (uint)h, 1, 128), a);
            }
        using (var a = new KernelArgs())
        {
            a.Add(seedV).Add(sink).Add(tokens).Add(Padded).Add(_vmids).Add(_vcodes).Add(_vzr).Add(Ptr(_vslotv)).Add(Ptr(_vslotc));
            kernels.EncodeValues(b, ValueSlots == 0).Launch(grid, a);
        }
        FillSyntheticSink(seedK, seedV);
        Tokens = tokens;
        kernels.Context.Synchronize();
    }

    /// <summary>An empty cache with room for <paramref name="capacity"/> stream tokens; fill it with
    /// <see cref="Append"/> (and the sink with <see cref="FillSyntheticSink"/> or by the caller).</summary>
    /// <param name="arena">Where the arrays come from (else one cuMemAlloc each); the caller disposes it after this cache.</param>
    public NuqLayerCache(DecodeKernels kernels, DecodeShape shape, NuqLayerProfile profile, long capacity, int sink, NuqLayout layout = NuqLayout.Slots,
        DeviceArena? arena = null)
        : base(shape, capacity, sink)
    {
        Arena = arena;
        _kernels = kernels;
        Layout = layout;
        bool slots = layout == NuqLayout.Slots;
        Tokens = 0;
        var ctx = kernels.Context;
        Profile = profile;
        int b = profile.Bits, h = shape.KvHeads, d = shape.HeadDim;
        long tiles = Padded / DecodeShape.Tile;
        try
        {
            _kcodes = Alloc(ctx, h * tiles * b * 32 * 4);
            if (slots)
            {
                _kslotv = Alloc(ctx, h * Padded * DecodeShape.KeySlots * 2);
                _kslotc = Alloc(ctx, h * Padded * DecodeShape.KeySlots);
            }
            if (layout == NuqLayout.SparseKeys) _klist = Alloc(ctx, h * (Padded / DecodeShape.Chunk) * DecodeShape.KeyListWords * 4);
            _kz = Upload(ctx, profile.KeyZero);
            _kr = Upload(ctx, profile.KeyRange);
            _kcb = Upload(ctx, Pad16(profile.KeyCodebook.DecodeLevels(false)));
            _vcodes = Alloc(ctx, h * tiles * b * 32 * 4);
            _vzr = Alloc(ctx, h * Padded * 4);
            if (slots)
            {
                _vslotv = Alloc(ctx, h * Padded * DecodeShape.ValueSlots * 2);
                _vslotc = Alloc(ctx, h * Padded * DecodeShape.ValueSlots);
            }
            _vcb = Upload(ctx, Pad16(profile.ValueCodebook.DecodeLevels(false)));
            _sinkK = Alloc(ctx, (long)h * Math.Max(sink, 1) * d * 2);
            _sinkV = Alloc(ctx, (long)h * Math.Max(sink, 1) * d * 2);
            _kmids = Upload(ctx, Pad16(profile.KeyCodebook.Midpoints));
            _vmids = Upload(ctx, Pad16(profile.ValueCodebook.Midpoints));
        }
        catch
        {
            Dispose();   // a cache that could not be built gives back what it had already taken
            throw;
        }
        ctx.Synchronize();
    }

    /// <summary>Encodes <paramref name="count"/> new tokens on the device: <paramref name="keys"/> (pre-RoPE) and
    /// <paramref name="values"/> are float32 [KV head][count][head dim]. The codec math is the CPU codecs'.</summary>
    public void Append(DeviceBuffer keys, DeviceBuffer values, int count, CudaStream? stream = null)
    {
        long need = (long)Shape.KvHeads * count * Shape.HeadDim * 4;
        if (count <= 0 || keys.Bytes < need || values.Bytes < need)
            throw new ArgumentException($"append of {count} tokens needs {need}-byte key and value buffers (got {keys.Bytes}, {values.Bytes})");
        Append(keys.Pointer, values.Pointer, count, stream);
    }

    /// <summary>The same from raw device addresses (a model's activation rows; the caller vouches for the sizes).</summary>
    public void Append(ulong keys, ulong values, int count, CudaStream? stream = null)
    {
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), count, "append of no tokens");
        var grid = AppendGrid(count);
        int b = Profile.Bits;
        using (var a = new KernelArgs())
        {
            a.Add(keys).Add(Tokens).Add((long)count).Add(Padded).Add(_kz).Add(_kr).Add(_kmids).Add(_kcodes).Add(Ptr(_kslotv)).Add(Ptr(_kslotc));
            _kernels.AppendKeys(b, KeySlots == 0).Launch(grid, a, stream);
        }
        if (_klist != null)
            using (var a = new KernelArgs())
            {
                long firstChunk = Tokens / DecodeShape.Chunk, lastChunk = (Tokens + count - 1) / DecodeShape.Chunk;
                a.Add(keys).Add(Tokens).Add((long)count).Add(Padded).Add(_kz).Add(_kr).Add(_klist);
                _kernels.AppendKeyList().Launch(new LaunchShape((uint)((lastChunk - firstChunk + 1 + 3) / 4), (uint)Shape.KvHeads, 1, 128), a, stream);
            }
        using (var a = new KernelArgs())
        {
            a.Add(values).Add(Tokens).Add((long)count).Add(Padded).Add(_vmids).Add(_vcodes).Add(_vzr).Add(Ptr(_vslotv)).Add(Ptr(_vslotc));
            _kernels.AppendValues(b, ValueSlots == 0).Launch(grid, a, stream);
        }
        Tokens += count;
    }

    /// <summary>Encodes <paramref name="count"/> new tokens from a model's rows: <paramref name="keys"/> (pre-RoPE) and
    /// <paramref name="values"/> f32 [count][KV head][head dim] on the device, one launch per side for the whole chunk
    /// (<see cref="Append(ulong, ulong, int, CudaStream?)"/> reads [KV head][count][head dim], the same only for one token).
    /// Same bytes as appending the tokens one by one (a warp owns an 8-token tile and keeps the bits of tokens it does
    /// not write). Not for the sparse layout (its key records are appended by the head-major kernel only).</summary>
    public void AppendRows(ulong keys, ulong values, int count, CudaStream? stream = null)
    {
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), count, "append of no tokens");
        if (Layout == NuqLayout.SparseKeys) throw new NotSupportedException("row appends into the sparse-key layout (append its tokens one at a time)");
        var grid = AppendGrid(count);
        int b = Profile.Bits;
        using (var a = new KernelArgs())
        {
            a.Add(keys).Add(Tokens).Add((long)count).Add(Shape.KvHeads).Add(Padded).Add(_kz).Add(_kr).Add(_kmids).Add(_kcodes).Add(Ptr(_kslotv)).Add(Ptr(_kslotc));
            _kernels.AppendRowKeys(b, KeySlots == 0).Launch(grid, a, stream);
        }
        using (var a = new KernelArgs())
        {
            a.Add(values).Add(Tokens).Add((long)count).Add(Shape.KvHeads).Add(Padded).Add(_vmids).Add(_vcodes).Add(_vzr).Add(Ptr(_vslotv)).Add(Ptr(_vslotc));
            _kernels.AppendRowValues(b, ValueSlots == 0).Launch(grid, a, stream);
        }
        Tokens += count;
    }

    /// <summary>The launch of an append of <paramref name="count"/> tokens (both layouts' kernels): one 128-thread block per
    /// 4 of the 8-token tiles it touches, per KV head; refuses an append past the capacity.</summary>
    private LaunchShape AppendGrid(int count)
    {
        if (Tokens + count > Padded)
            throw new InvalidOperationException($"{Name} cache: {Tokens} tokens + {count} exceed its capacity of {Padded}");
        long firstTile = Tokens / DecodeShape.Tile, lastTile = (Tokens + count - 1) / DecodeShape.Tile;
        return new LaunchShape((uint)((lastTile - firstTile + 1 + 3) / 4), (uint)Shape.KvHeads, 1, 128);
    }

    /// <summary>The sink's exact (f16) pre-RoPE copies of positions 0 .. sink-1 from the synthetic source.</summary>
    public void FillSyntheticSink(uint seedK, uint seedV)
    {
        if (Sink == 0) return;
        int h = Shape.KvHeads, d = Shape.HeadDim;
        foreach (var (seed, dst) in new[] { (seedK, _sinkK), (seedV, _sinkV) })
        {
            using var a = new KernelArgs();
            long total = (long)h * Sink * d;
            a.Add(seed).Add(h).Add(0L).Add((long)Sink).Add((long)Sink).Add(0).Add(0.0).Add(dst);
            _kernels.WriteF16().Launch(LaunchShape.Grid1((total + 255) / 256, 256), a);
        }
    }

    /// <summary>A slot buffer's device address, 0 for the dense layout (the dense kernels never touch it).</summary>
    private static ulong Ptr(DeviceBuffer? b) => b?.Pointer ?? 0UL;

    /// <summary>Device bytes of the per-token arrays of one layer's cache of <paramref name="tokens"/> tokens (padded to
    /// whole chunks) and the sink, before it is made: what a capacity plan adds up. The profile's scales and tables
    /// (a few KB) come on top.</summary>
    public static long BytesFor(DecodeShape shape, int bits, long tokens, int sink, NuqLayout layout)
    {
        long h = shape.KvHeads, d = shape.HeadDim, padded = DecodeShape.Padded(tokens);
        long codes = 2 * h * padded * d * bits / 8;
        long slots = layout switch
        {
            NuqLayout.Slots => h * padded * (DecodeShape.KeySlots * 3 + DecodeShape.ValueSlots * 3),
            NuqLayout.SparseKeys => h * (padded / DecodeShape.Chunk) * DecodeShape.KeyListWords * 4,
            _ => 0,
        };
        return codes + h * padded * 4 + slots + 2 * h * Math.Max(sink, 1) * d * 2;
    }

    private DeviceBuffer Upload(CudaContext ctx, float[] data)
    {
        var buf = Arena?.Take(data.Length * 4L) ?? ctx.Upload(data);
        if (Arena != null) buf.CopyFrom(data);
        Buffers.Add(buf);
        return buf;
    }

    /// <summary>The sizes of the arrays an empty cache of <paramref name="capacity"/> tokens allocates, in order (for
    /// sizing a <see cref="DeviceArena"/>).</summary>
    public static IEnumerable<long> ArraySizes(DecodeShape shape, int bits, long capacity, int sink, NuqLayout layout)
    {
        long h = shape.KvHeads, d = shape.HeadDim, padded = DecodeShape.Padded(capacity);
        long codes = h * (padded / DecodeShape.Tile) * bits * 32 * 4;
        bool slots = layout == NuqLayout.Slots;
        yield return codes;
        if (slots)
        {
            yield return h * padded * DecodeShape.KeySlots * 2;
            yield return h * padded * DecodeShape.KeySlots;
        }
        if (layout == NuqLayout.SparseKeys) yield return h * (padded / DecodeShape.Chunk) * DecodeShape.KeyListWords * 4;
        yield return h * d * 4;
        yield return h * d * 4;
        yield return 64;
        yield return codes;
        yield return h * padded * 4;
        if (slots)
        {
            yield return h * padded * DecodeShape.ValueSlots * 2;
            yield return h * padded * DecodeShape.ValueSlots;
        }
        yield return 64;
        yield return h * Math.Max(sink, 1) * d * 2;
        yield return h * Math.Max(sink, 1) * d * 2;
        yield return 64;
        yield return 64;
    }

    private static float[] Pad16(float[] x)
    {
        var r = new float[16];
        x.AsSpan().CopyTo(r);
        return r;
    }

    /// <summary>Codes, key slots (f16 + u8), value zero/range and slots (none when dense), for the real tokens; the
    /// sink's f16 copies.</summary>
    public override long BytesPerDecode
    {
        get
        {
            long h = Shape.KvHeads, d = Shape.HeadDim, b = Profile.Bits;
            long keys = Tokens * (d * b / 8 + KeySlots * 3) + (Tokens + DecodeShape.Chunk - 1) / DecodeShape.Chunk * KeyListWords * 4;
            long values = Tokens * (d * b / 8 + 4 + ValueSlots * 3);
            return h * (keys + values + 2L * Sink * d * 2);
        }
    }

    internal override void AddAttentionArgs(KernelArgs a, ulong q) =>
        a.Add(q).Add(_kcodes).Add(Ptr(_kslotv ?? _klist)).Add(Ptr(_kslotc)).Add(_kz).Add(_kr).Add(_kcb)
         .Add(_vcodes).Add(_vzr).Add(Ptr(_vslotv)).Add(Ptr(_vslotc)).Add(_vcb);

    internal override (ulong SinkK, ulong SinkV) SinkBuffers => (_sinkK.Pointer, _sinkV.Pointer);

    /// <summary>Device addresses of the layout's arrays (0 where the layout has none), for kernels other than the decode
    /// kernels that read it (the model's tiled prefill attention, model.cu load_tile).</summary>
    internal (ulong KCodes, ulong KSlotV, ulong KSlotC, ulong KZero, ulong KRange, ulong KLevels, ulong VCodes, ulong VZeroRange,
        ulong VSlotV, ulong VSlotC, ulong VLevels) Arrays =>
        (_kcodes.Pointer, Ptr(_kslotv), Ptr(_kslotc), _kz.Pointer, _kr.Pointer, _kcb.Pointer, _vcodes.Pointer, _vzr.Pointer,
         Ptr(_vslotv), Ptr(_vslotc), _vcb.Pointer);
}
