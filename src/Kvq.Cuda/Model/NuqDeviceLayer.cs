using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;

namespace Kvq.Cuda.Model;

/// <summary>
/// One layer's KVQuant cache in device memory (model.cu's layout), with the parameters of the CPU codecs it mirrors:
/// per KV head the pre-RoPE key zero/range, key and value codebook thresholds and levels, the layer's bit widths
/// (they differ per layer under :mixed), key outlier slots S and value outliers per tail k. Paged: slots are a pool's
/// (<see cref="CudaKvCache"/>); the sink's f16 copies belong to each sequence.
/// </summary>
internal sealed class NuqDeviceLayer : IDisposable
{
    private readonly List<DeviceBuffer> _owned = new();
    public long Capacity { get; }
    public int KeyBits { get; }
    public int ValueBits { get; }
    public int KeySlots { get; }
    public int ValueOutliersPerTail { get; }
    public int KMidCount { get; }
    public int VMidCount { get; }
    public DeviceBuffer KCodes { get; }
    public DeviceBuffer KSlotV { get; }
    public DeviceBuffer KSlotC { get; }
    public DeviceBuffer KZero { get; }
    public DeviceBuffer KRange { get; }
    public DeviceBuffer KMids { get; }
    public DeviceBuffer KLevels { get; }
    public DeviceBuffer VCodes { get; }
    public DeviceBuffer VZeroRange { get; }
    public DeviceBuffer VSlotV { get; }
    public DeviceBuffer VSlotC { get; }
    public DeviceBuffer VMids { get; }
    public DeviceBuffer VLevels { get; }
    /// <summary>Device bytes allocated per token slot (all KV heads) for these widths and slot counts: codes, key and
    /// value slots (at least one of each is allocated), value zero/range (the pool arrays of the constructor, less the
    /// 16 spare bytes per array).</summary>
    internal static long AllocatedBytesPerToken(int kvHeads, int headDim, int keyBits, int valueBits, int keySlots, int valueSlots)
    {
        long kw = (headDim * keyBits + 31) / 32, vw = (headDim * valueBits + 31) / 32;
        return kvHeads * (kw * 4 + Math.Max(keySlots, 1) * 3L + vw * 4 + 4 + Math.Max(valueSlots, 1) * 3L);
    }

    /// <summary>Bytes per stored token (all KV heads): codes, slots, value zero/range.</summary>
    public long BytesPerToken { get; }

    public NuqDeviceLayer(CudaContext ctx, NuqChannelCodec[] keys, NuqTokenCodec[] values, long capacity)
    {
        int h = keys.Length, d = keys[0].HeadDim;
        Capacity = capacity;
        KeyBits = keys[0].Spec.Bits;
        ValueBits = values[0].Spec.Bits;
        KeySlots = keys[0].OutlierSlots;
        ValueOutliersPerTail = values[0].OutliersPerTail;
        for (int i = 1; i < h; i++)
            if (keys[i].Spec.Bits != KeyBits || values[i].Spec.Bits != ValueBits || keys[i].OutlierSlots != KeySlots || values[i].OutliersPerTail != ValueOutliersPerTail)
                throw new NotSupportedException("the CUDA KVQuant cache takes one bit width and outlier count per layer for all KV heads");
        int kw = (d * KeyBits + 31) / 32, vw = (d * ValueBits + 31) / 32, vs = 2 * ValueOutliersPerTail;
        var kz = new float[h * d];
        var kr = new float[h * d];
        var kmids = new float[h * 16];
        var klev = new float[h * 16];
        var vmids = new float[h * 16];
        var vlev = new float[h * 16];
        for (int i = 0; i < h; i++)
        {
            keys[i].Zeros.CopyTo(kz.AsSpan(i * d, d));
            keys[i].Ranges.CopyTo(kr.AsSpan(i * d, d));
            keys[i].Codebook.Midpoints.CopyTo(kmids.AsSpan(i * 16));
            keys[i].DecodeLevels.CopyTo(klev.AsSpan(i * 16));
            values[i].Codebook.Midpoints.CopyTo(vmids.AsSpan(i * 16));
            values[i].DecodeLevels.CopyTo(vlev.AsSpan(i * 16));
        }
        KMidCount = keys[0].Codebook.Midpoints.Length;
        VMidCount = values[0].Codebook.Midpoints.Length;
        try
        {
            KCodes = Alloc(ctx, h * capacity * kw * 4 + 16);   // + a spare word: codes are read as 64-bit windows
            KSlotV = Alloc(ctx, h * capacity * Math.Max(KeySlots, 1) * 2);
            KSlotC = Alloc(ctx, h * capacity * Math.Max(KeySlots, 1));
            KZero = Up(ctx, kz);
            KRange = Up(ctx, kr);
            KMids = Up(ctx, kmids);
            KLevels = Up(ctx, klev);
            VCodes = Alloc(ctx, h * capacity * vw * 4 + 16);
            VZeroRange = Alloc(ctx, h * capacity * 4);
            VSlotV = Alloc(ctx, h * capacity * Math.Max(vs, 1) * 2);
            VSlotC = Alloc(ctx, h * capacity * Math.Max(vs, 1));
            VMids = Up(ctx, vmids);
            VLevels = Up(ctx, vlev);
        }
        catch
        {
            Dispose();
            throw;
        }
        BytesPerToken = h * (kw * 4L + KeySlots * 3L + vw * 4L + 4 + vs * 3L);
        PagedArrays =
        [
            (KCodes, kw * 4), (KSlotV, Math.Max(KeySlots, 1) * 2), (KSlotC, Math.Max(KeySlots, 1)),
            (VCodes, vw * 4), (VZeroRange, 4), (VSlotV, Math.Max(vs, 1) * 2), (VSlotC, Math.Max(vs, 1)),
        ];
    }

    /// <summary>The per-token arrays, each [KV head][<see cref="Capacity"/>][bytes per slot]: what a block copy moves.</summary>
    public (DeviceBuffer Buffer, int SlotBytes)[] PagedArrays { get; }

    /// <summary>The CPU codecs of one layer's KV heads, as the layout plan built them, when they are ones this cache
    /// mirrors (pre-RoPE per-channel nuq keys, per-token nuq values), else null.</summary>
    public static (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)? Codecs(KvLayoutPlan plan, int layer)
    {
        var shape = plan.Shape;
        var keys = new NuqChannelCodec[shape.KvHeads];
        var values = new NuqTokenCodec[shape.KvHeads];
        for (int h = 0; h < shape.KvHeads; h++)
        {
            if (plan.Keys.CodecOf(layer, h) is not NuqChannelCodec k || !k.PreRope) return null;
            if (plan.Values.CodecOf(layer, h) is not NuqTokenCodec v || v.PreRope) return null;
            if (k.Codebook.Levels.Length > 16 || v.Codebook.Levels.Length > 16) return null;
            keys[h] = k;
            values[h] = v;
        }
        return (keys, values);
    }

    private DeviceBuffer Alloc(CudaContext ctx, long bytes)
    {
        var b = ctx.Allocate(Math.Max(bytes, 16));
        b.Fill(0);
        _owned.Add(b);
        return b;
    }

    private DeviceBuffer Up(CudaContext ctx, float[] data)
    {
        var b = ctx.Upload(data);
        _owned.Add(b);
        return b;
    }

    public long DeviceBytes => _owned.Sum(b => b.Bytes);

    public void Dispose()
    {
        foreach (var b in _owned) b.Dispose();
        _owned.Clear();
    }
}
