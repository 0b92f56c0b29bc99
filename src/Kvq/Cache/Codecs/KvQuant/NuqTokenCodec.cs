using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// KVQuant values (and keys in the per-token ablation): per-token dynamic scaling. The token's own k largest and k
/// smallest values (<see cref="KvQuantSpec.TokenOutliersPerTail"/>) are kept exactly (f16 + channel index); the rest's
/// min/max give an f16 zero = (max+min)/2 and range = (max-min)/2; each value encodes to the nearest level of this
/// layer's codebook for the stream. Block layout (T tokens): outlier values T*2k*2 | ranges T*2 | zeros T*2 |
/// codes T*ceil(D*B/8) | outlier indices T*2k*(1 or 2).
/// </summary>
public sealed class NuqTokenCodec : KvCodec, IKvQuantAccounting, IKvCodecReference
{
    private readonly KvQuantSpec _spec;
    private readonly KvSide _side;
    private readonly bool _preRope;
    private readonly float[] _mids, _levels;
    private readonly int _k, _codeBytes, _rangesOffset, _zerosOffset, _codesOffset;
    private readonly OutlierSlots _slots;
    private readonly NuqLanes? _lanes;          // fused value kernels (NuqKernels), when the machine has them
    private readonly Vector512<float> _lut;

    public override string Name => _spec.Name;
    public override bool PreRope => _preRope;
    public KvQuantSpec Spec => _spec;
    public NuqCodebook Codebook { get; }
    public KvQuantCounters Counters { get; } = new();
    public int OutliersPerTail => _k;
    /// <summary>What each code decodes to on [-1, 1] before the token's zero and range (device backends).</summary>
    public ReadOnlySpan<float> DecodeLevels => _levels;

    public NuqTokenCodec(KvQuantSpec spec, KvSide side, int blockTokens, int headDim, NuqCodebook codebook) : base(blockTokens, headDim)
    {
        if (codebook.Bits != spec.Bits) throw new ArgumentException($"{spec.Name}: a {codebook.Bits}-bit codebook");
        _spec = spec;
        _side = side;
        _preRope = side == KvSide.Key && !spec.PostRope;
        Codebook = codebook;
        _mids = codebook.Midpoints;
        _levels = codebook.DecodeLevels(spec.QNorm);
        _k = KvQuantSpec.TokenOutliersPerTail(spec.OutlierFraction, headDim);
        if (2 * _k >= headDim)
            throw new KvSpecException($"{spec.Name}: {2 * _k} outliers per token leave nothing of head dim {headDim}");
        _codeBytes = NuqBits.Bytes(headDim, spec.Bits);
        int s = 2 * _k;
        _rangesOffset = blockTokens * s * 2;
        _zerosOffset = _rangesOffset + blockTokens * 2;
        _codesOffset = _zerosOffset + blockTokens * 2;
        _slots = new OutlierSlots(s, headDim, blockTokens, 0, _codesOffset + blockTokens * _codeBytes);
        if (NuqLanes.IsSupported(headDim, spec.Bits))
        {
            _lanes = NuqLanes.Natural(headDim, spec.Bits);
            _lut = NuqLanes.Repeat(_levels);
        }
    }

    /// <summary>Fused: acc += w_j (cb[code] range_j + zero_j) from the codes, outliers as sparse corrections
    /// (NuqKernels.ValueAccumulate); the base class's decode + tile path where the kernel does not apply.</summary>
    public override void Accumulate(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile)
    {
        if (_lanes == null || count == 0)
        {
            base.Accumulate(block, count, w, nq, acc, tile);
            return;
        }
        if (block.Length < BlockBytes || (uint)count > (uint)BlockTokens || w.Length < nq * count || acc.Length < nq * HeadDim
            || tile.Length < count * HeadDim)
            throw new ArgumentException($"{Name}: accumulate of {nq} rows over {count} tokens with a {block.Length}-byte block, " +
                $"{w.Length} weights, {acc.Length} accumulator values, {tile.Length} tile values");
        NuqKernels.ValueAccumulate(_lanes, block, count, _rangesOffset, _zerosOffset, _codesOffset, _codeBytes, _slots.Slots, 0,
            _codesOffset + BlockTokens * _codeBytes, _lut, w, nq, acc, tile);
    }

    public override KvBytes BlockLayout =>
        new(BlockTokens * (long)_codeBytes, BlockTokens * 2L, BlockTokens * 2L, _slots.ValueBytes, _slots.IndicesBytes, 0);

    /// <summary>Outlier values, ranges, zeros, codes, outlier indices: each a fixed record per token.</summary>
    protected override TokenSection[] DescribeTokenSections() =>
        [new(0, 2 * 2 * _k), new(_rangesOffset, 2), new(_zerosOffset, 2), new(_codesOffset, _codeBytes),
         new(_codesOffset + BlockTokens * _codeBytes, 2 * _k * _slots.IndexBytes)];

    public double KvQuantBitsPerElement => KvQuantAccounting.PerToken(_spec.Bits, 2 * _k, HeadDim);

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot)
    {
        if (x.Length != HeadDim || block.Length < BlockBytes || (uint)slot >= (uint)BlockTokens)
            throw new ArgumentException($"{Name}: encode of {x.Length} values into slot {slot} of a {block.Length}-byte block");
        int d = HeadDim, s = 2 * _k;
        Span<bool> isOutlier = stackalloc bool[d];
        Span<int> idx = stackalloc int[Math.Max(1, s)];
        Span<byte> codes = stackalloc byte[d];
        var (min, max) = TokenOutliers.Split(x, _k, isOutlier, idx);
        ushort zh = QuantFormats.SingleToHalf(Math.Clamp((max + min) * 0.5f, -65504f, 65504f));
        ushort rh = QuantFormats.SingleToHalf(Math.Min((max - min) * 0.5f, 65504f));
        float zero = QuantFormats.HalfToSingle(zh), range = QuantFormats.HalfToSingle(rh);
        Unsafe.WriteUnaligned(ref block[_rangesOffset + 2 * slot], rh);
        Unsafe.WriteUnaligned(ref block[_zerosOffset + 2 * slot], zh);
        var mids = _mids;
        for (int c = 0; c < d; c++)
        {
            float u = range > 0 ? (x[c] - zero) / range : 0f;
            int code = 0;
            for (int i = 0; i < mids.Length; i++) code += u > mids[i] ? 1 : 0;
            codes[c] = (byte)code;
        }
        NuqBits.Pack(codes, _spec.Bits, block.Slice(_codesOffset + slot * _codeBytes, _codeBytes));
        for (int j = 0; j < s; j++) _slots.Set(block, slot, j, idx[j], x[idx[j]]);
        KvQuantCounters.Record(Counters, _side, d, s, 0);
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        if (block.Length < BlockBytes || (uint)count > (uint)BlockTokens || dst.Length < count * HeadDim)
            throw new ArgumentException($"{Name}: decode of {count} tokens from a {block.Length}-byte block into {dst.Length} values");
        int d = HeadDim;
        Span<float> lut = stackalloc float[_levels.Length];
        ref byte b0 = ref MemoryMarshal.GetReference(block);
        for (int t = 0; t < count; t++)
        {
            float range = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref b0, _rangesOffset + 2 * t)));
            float zero = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref b0, _zerosOffset + 2 * t)));
            for (int q = 0; q < lut.Length; q++) lut[q] = zero + range * _levels[q];
            var row = dst.Slice(t * d, d);
            NuqDecode.Row(block.Slice(_codesOffset + t * _codeBytes, _codeBytes), _spec.Bits, lut, 0, row);
            if (_slots.Slots > 0) _slots.Apply(block, t, row);
        }
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        int d = HeadDim, s = 2 * _k, ib = _slots.IndexBytes, idxAt = _codesOffset + BlockTokens * _codeBytes;
        for (int t = 0; t < count; t++)
        {
            float range = NuqErrorBound.Half(block, _rangesOffset + 2 * t), zero = NuqErrorBound.Half(block, _zerosOffset + 2 * t);
            var codes = block.Slice(_codesOffset + t * _codeBytes, _codeBytes);
            for (int c = 0; c < d; c++) dst[t * d + c] = zero + range * _levels[NuqErrorBound.Code(codes, c, _spec.Bits)];
            for (int j = 0; j < s; j++)
            {
                int i = t * s + j;
                dst[t * d + NuqErrorBound.Index(block, idxAt + i * ib, ib)] = NuqErrorBound.Half(block, 2 * i);
            }
        }
    }

    /// <summary>The 2k outliers: f16 rounding. The rest: the token's f16 range times the widest error of the code
    /// interval holding the normalized value.</summary>
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound)
    {
        int d = HeadDim;
        Span<bool> isOutlier = stackalloc bool[d];
        Span<int> idx = stackalloc int[Math.Max(1, 2 * _k)];
        for (int t = 0; t < xs.Length / d; t++)
        {
            var x = xs.Slice(t * d, d);
            var b = bound.Slice(t * d, d);
            var (min, max) = TokenOutliers.Split(x, _k, isOutlier, idx);
            float zero = QuantFormats.HalfToSingle(QuantFormats.SingleToHalf(Math.Clamp((max + min) * 0.5f, -65504f, 65504f)));
            float range = QuantFormats.HalfToSingle(QuantFormats.SingleToHalf(Math.Min((max - min) * 0.5f, 65504f)));
            for (int c = 0; c < d; c++)
            {
                if (isOutlier[c]) { b[c] = NuqErrorBound.F16(x[c]); continue; }
                if (!(range > 0)) { b[c] = Math.Abs(x[c] - zero) + NuqErrorBound.Slack(zero, 0); continue; }
                float u = (x[c] - zero) / range;
                b[c] = range * NuqErrorBound.Interval(u, Codebook, _levels) + NuqErrorBound.Slack(zero, range * (1 + Math.Abs(u)));
            }
        }
    }
}
