using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// KVQuant keys: static per-channel scaling from the profile (this layer and KV head), nearest level of this layer's
/// codebook, B-bit codes, and every value outside [-1, 1] after normalization kept exactly (f16) in the block's sparse
/// rows beside it (<see cref="BlockOutliers"/>: no fixed slots, nothing clamped). Pre-RoPE unless the spec says post
/// (then the sequence rotates keys before encoding and the scales and codebook are the post-RoPE ones).
/// Block layout (T tokens): codes T*ceil(D*B/8); the outliers beside it; the per-channel scales live in the profile.
/// Dense specs (no -F%) have no sparse part: values outside [-1, 1] decode to the extreme level (min/max calibration).
/// </summary>
public sealed class NuqChannelCodec : KvCodec, IKvQuantAccounting, IKvCodecReference
{
    private readonly KvQuantSpec _spec;
    private readonly float[] _zero, _range;   // (HeadDim)
    private readonly float[] _mids;           // codebook decision thresholds (levels - 1)
    private readonly float[] _decode;         // (HeadDim, levels): zero_c + range_c * level
    private readonly int _levels, _codeBytes, _indexBits;
    private readonly float[] _decodeLevels;  // what each code decodes to on [-1, 1] (Q-Norm applied)
    // Fused kernels (NuqKernels): lane layouts built on first use, per RoPE style (pre-RoPE) or channel order (post).
    private readonly bool _fused;
    private readonly Vector512<float> _lut;
    private KeyLanes? _normal, _neox, _natural;

    private sealed class KeyLanes(NuqLanes lanes, float[] zero, float[] range)
    {
        public readonly NuqLanes Lanes = lanes;
        public readonly float[] Zero = zero, Range = range;
    }

    public override string Name => _spec.Name;
    internal override bool FusesUnderSink => true;
    public override bool PreRope => !_spec.PostRope;
    public override bool HasBlockOutliers => _spec.HasOutliers;
    /// <summary>Header + the nominal fraction's entries (index + f16 value each).</summary>
    public override double ExpectedOutlierBytesPerBlock => _spec.HasOutliers
        ? 3 + _spec.OutlierFraction * BlockTokens * HeadDim * (_indexBits + 16) / 8.0 : 0;
    public KvQuantSpec Spec => _spec;
    public NuqCodebook Codebook { get; }
    /// <summary>Key outlier slots per token of the GPU's device layout (the CPU keeps every outlier in sparse rows).</summary>
    public int OutlierSlots => _spec.HasOutliers ? _spec.KeySlots ?? KvQuantSpec.KeyOutlierSlots(_spec.OutlierFraction, HeadDim) : 0;
    /// <summary>Per-channel zero and range of this (layer, KV head): u = (x - zero) / range (device backends).</summary>
    public ReadOnlySpan<float> Zeros => _zero;
    public ReadOnlySpan<float> Ranges => _range;
    /// <summary>What each code decodes to on [-1, 1] (the codebook with Q-Norm applied when the spec asks).</summary>
    public ReadOnlySpan<float> DecodeLevels => _decodeLevels;

    public NuqChannelCodec(KvQuantSpec spec, KvSide side, int blockTokens, int headDim,
        ReadOnlySpan<float> zero, ReadOnlySpan<float> range, NuqCodebook codebook) : base(blockTokens, headDim)
    {
        if (zero.Length != headDim || range.Length != headDim)
            throw new ArgumentException($"{spec.Name}: {zero.Length} zeros / {range.Length} ranges for head dim {headDim}");
        if (codebook.Bits != spec.Bits) throw new ArgumentException($"{spec.Name}: a {codebook.Bits}-bit codebook");
        _spec = spec;
        Codebook = codebook;
        _zero = zero.ToArray();
        _range = range.ToArray();
        _levels = codebook.Levels.Length;
        _mids = codebook.Midpoints;
        var levels = _decodeLevels = codebook.DecodeLevels(spec.QNorm);
        _decode = new float[headDim * _levels];
        for (int c = 0; c < headDim; c++)
            for (int q = 0; q < _levels; q++) _decode[c * _levels + q] = _zero[c] + _range[c] * levels[q];
        _codeBytes = NuqBits.Bytes(headDim, spec.Bits);
        _indexBits = BlockOutliers.IndexBitsFor(blockTokens, headDim);
        _fused = NuqLanes.IsSupported(headDim, spec.Bits);
        if (_fused) _lut = NuqLanes.Repeat(levels);
    }

    private KeyLanes Lanes(NuqLanes lanes) => new(lanes, lanes.InLaneOrder(_zero), lanes.InLaneOrder(_range));

    /// <summary>The block's sparse rows for a format that keeps them (refusing to go without), null for a dense spec
    /// (rows passed to a dense spec are left untouched).</summary>
    private BlockOutliers? Need(BlockOutliers? outliers) => !(_spec.HasOutliers) ? null
        : outliers ?? throw new ArgumentException($"{Name}: blocks of this format keep their outliers beside them; pass the block's BlockOutliers");

    public override void ScoresPreRope(ReadOnlySpan<byte> block, int count, ReadOnlySpan<int> positions, Rope rope,
        ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile) =>
        ScoresPreRope(block, Need(null), count, positions, rope, q, nq, scores, tile);

    public override void Scores(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile) =>
        Scores(block, Need(null), count, q, nq, scores, tile);

    /// <summary>Fused: codes -> codebook -> scale/zero -> exact outliers blended into their lanes -> RoPE at each
    /// position -> dots, in registers (NuqKernels.KeyScores; the block's sparse rows unpacked once into per-token
    /// slots); the decode + rotate + tile path where the kernel does not apply.</summary>
    [SkipLocalsInit]   // lane-mask buffers: ToLanes clears the masks and writes every value a set bit selects
    public override void ScoresPreRope(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, ReadOnlySpan<int> positions,
        Rope rope, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        outliers = Need(outliers);
        if (!_fused || rope.RopeDims != HeadDim || rope.HeadDim != HeadDim || count == 0)
        {
            var t = tile[..(count * HeadDim)];
            DecodeBlock(block, outliers, count, t);
            rope.RotateAt(t, count, positions);
            Attention.TileMath.Scores(t, count, HeadDim, q, nq, scores);
            return;
        }
        Check(block, count, q, nq, scores, tile);
        if (positions.Length < count) throw new ArgumentException($"{Name}: {positions.Length} positions for {count} tokens");
        var set = rope.Style == RopeStyle.Normal
            ? _normal ??= Lanes(NuqLanes.RopeOrder(HeadDim, _spec.Bits, RopeStyle.Normal))
            : _neox ??= Lanes(NuqLanes.RopeOrder(HeadDim, _spec.Bits, rope.Style));
        if (HeadDim == LaneMaskDim && outliers != null && outliers.Count > 0)
        {
            // The register kernel's case (head dim 64): each token's outliers as a lane mask and replacement row.
            Span<ulong> masks = count <= 64 ? stackalloc ulong[count] : new ulong[count];
            Span<float> dense = count <= 64 ? stackalloc float[count * LaneMaskDim] : new float[count * LaneMaskDim];
            outliers.ToLanes(count, HeadDim, set.Lanes.LaneOf, masks, dense);
            NuqKernels.KeyScores(set.Lanes, block, count, positions[..count], rope, 0, _codeBytes, 0, default, default, masks, dense,
                _lut, set.Zero, set.Range, q, nq, scores, tile);
            return;
        }
        using var e = new NuqOutlierRows.Unpacked(outliers?.Count ?? 0);
        int slots = Slots(e, outliers, count, out var channels, out var values);
        NuqKernels.KeyScores(set.Lanes, block, count, positions[..count], rope, 0, _codeBytes, slots, channels, values, _lut,
            set.Zero, set.Range, q, nq, scores, tile);
    }

    /// <summary>The head dim whose register kernels take outliers as per-token lane masks (one 64-bit word a token).</summary>
    private const int LaneMaskDim = 64;

    /// <summary>Post-RoPE keys (the :post ablation): the same fused kernel without the rotation.</summary>
    [SkipLocalsInit]
    public override void Scores(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, ReadOnlySpan<float> q, int nq,
        Span<float> scores, Span<float> tile)
    {
        outliers = Need(outliers);
        if (!_fused || count == 0)
        {
            DecodeBlock(block, outliers, count, tile);
            Attention.TileMath.Scores(tile[..(count * HeadDim)], count, HeadDim, q, nq, scores);
            return;
        }
        Check(block, count, q, nq, scores, tile);
        var set = _natural ??= Lanes(NuqLanes.Natural(HeadDim, _spec.Bits));
        if (HeadDim == LaneMaskDim && outliers != null && outliers.Count > 0)
        {
            Span<ulong> masks = count <= 64 ? stackalloc ulong[count] : new ulong[count];
            Span<float> dense = count <= 64 ? stackalloc float[count * LaneMaskDim] : new float[count * LaneMaskDim];
            outliers.ToLanes(count, HeadDim, set.Lanes.LaneOf, masks, dense);
            NuqKernels.KeyScores(set.Lanes, block, count, default, null, 0, _codeBytes, 0, default, default, masks, dense,
                _lut, set.Zero, set.Range, q, nq, scores, tile);
            return;
        }
        using var e = new NuqOutlierRows.Unpacked(outliers?.Count ?? 0);
        int slots = Slots(e, outliers, count, out var channels, out var values);
        NuqKernels.KeyScores(set.Lanes, block, count, default, null, 0, _codeBytes, slots, channels, values, _lut,
            set.Zero, set.Range, q, nq, scores, tile);
    }

    /// <summary>The block's exact outliers of its first count tokens as per-token slots for the kernel's lane blends.</summary>
    private int Slots(in NuqOutlierRows.Unpacked e, BlockOutliers? outliers, int count, out Span<byte> channels, out Span<float> values)
    {
        channels = default;
        values = default;
        return outliers == null ? 0 : e.ToSlots(e.Read(outliers, count * HeadDim), count, HeadDim, out channels, out values);
    }

    private void Check(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        if (block.Length < BlockBytes || (uint)count > (uint)BlockTokens || q.Length < nq * HeadDim || scores.Length < nq * count
            || tile.Length < count * HeadDim)
            throw new ArgumentException($"{Name}: scores of {nq} rows over {count} tokens with a {block.Length}-byte block, " +
                $"{q.Length} query values, {scores.Length} scores, {tile.Length} tile values");
    }

    public override KvBytes BlockLayout => KvBytes.CodesOnly(BlockTokens * (long)_codeBytes);

    /// <summary>Codes: a fixed record per token (outliers move with <see cref="CopySlot(ReadOnlySpan{byte}, BlockOutliers?, int, Span{byte}, BlockOutliers?, int)"/>).</summary>
    protected override TokenSection[] DescribeTokenSections() => [new(0, _codeBytes)];

    public override void CopySlot(ReadOnlySpan<byte> src, int srcSlot, Span<byte> dst, int dstSlot) =>
        CopySlot(src, Need(null), srcSlot, dst, null, dstSlot);

    public override void CopySlot(ReadOnlySpan<byte> src, BlockOutliers? srcOutliers, int srcSlot, Span<byte> dst,
        BlockOutliers? dstOutliers, int dstSlot)
    {
        base.CopySlot(src, srcSlot, dst, dstSlot);
        if (_spec.HasOutliers) NuqOutlierRows.CopyToken(Need(srcOutliers)!, srcSlot, Need(dstOutliers)!, dstSlot, HeadDim, _indexBits);
    }

    public double KvQuantBitsPerElement => KvQuantAccounting.PerChannel(_spec.Bits, _spec.OutlierFraction, HeadDim, BlockTokens);

    /// <summary>Normalized value of channel c: (x - zero) / range.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Normalize(float x, int c) => (x - _zero[c]) / _range[c];

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) => EncodeToken(x, block, Need(null), slot);

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, BlockOutliers? outliers, int slot)
    {
        if (x.Length != HeadDim || block.Length < BlockBytes || (uint)slot >= (uint)BlockTokens)
            throw new ArgumentException($"{Name}: encode of {x.Length} values into slot {slot} of a {block.Length}-byte block");
        outliers = Need(outliers);
        int d = HeadDim, n = 0, c = 0;
        Span<byte> codes = stackalloc byte[d];
        Span<int> channels = stackalloc int[d];
        Span<ushort> halves = stackalloc ushort[d];
        var mids = _mids;
        if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported) c = EncodeVector(x, codes, outliers != null, channels, halves, ref n);
        for (; c < d; c++)
        {
            float u = (x[c] - _zero[c]) / _range[c];
            int code = 0;
            for (int i = 0; i < mids.Length; i++) code += u > mids[i] ? 1 : 0;
            codes[c] = (byte)code;   // outliers too (their exact value overrides the code)
            if (outliers != null && (u > 1f || u < -1f))
            {
                channels[n] = c;
                halves[n++] = QuantFormats.SingleToHalf(Math.Clamp(x[c], -65504f, 65504f));
            }
        }
        NuqBits.Pack(codes, _spec.Bits, block.Slice(slot * _codeBytes, _codeBytes));
        outliers?.SetToken(slot, d, _indexBits, channels[..n], halves[..n]);
    }

    /// <summary>The encoder's code search and outlier test 16 channels at a time (AVX-512), for the channels of whole
    /// vectors; returns how many it did (the scalar loop does the rest). The same float operations as the scalar
    /// loop (u = (x - zero) / range, code = how many midpoints u exceeds, NaN exceeding none; outlier when |u| &gt; 1),
    /// so the same codes and entries bit for bit (<c>NuqEncodeReferenceTests</c>): a decode token encodes 16 keys, and
    /// the scalar search cost ~15 compares per value.</summary>
    private int EncodeVector(ReadOnlySpan<float> x, Span<byte> codes, bool keepOutliers, Span<int> channels, Span<ushort> halves, ref int n)
    {
        int d = HeadDim, c = 0;
        var mids = _mids;
        var one = Vector512.Create(1f);
        var minusOne = Vector512.Create(-1f);
        for (; c + 16 <= d; c += 16)
        {
            var u = (Vector512.Create(x.Slice(c, 16)) - Vector512.Create(_zero.AsSpan(c, 16))) / Vector512.Create(_range.AsSpan(c, 16));
            var code = Vector512<int>.Zero;
            for (int i = 0; i < mids.Length; i++) code -= Vector512.GreaterThan(u, Vector512.Create(mids[i])).AsInt32();
            Avx512F.ConvertToVector128Byte(code).CopyTo(codes.Slice(c, 16));   // codes < 256: no saturation
            if (!keepOutliers) continue;
            ulong out16 = (Vector512.GreaterThan(u, one) | Vector512.LessThan(u, minusOne)).ExtractMostSignificantBits();
            while (out16 != 0)
            {
                int ch = c + System.Numerics.BitOperations.TrailingZeroCount(out16);
                out16 &= out16 - 1;
                channels[n] = ch;
                halves[n++] = QuantFormats.SingleToHalf(Math.Clamp(x[ch], -65504f, 65504f));
            }
        }
        return c;
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) => DecodeBlock(block, Need(null), count, dst);

    public override void DecodeBlock(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst)
    {
        if (block.Length < BlockBytes || (uint)count > (uint)BlockTokens || dst.Length < count * HeadDim)
            throw new ArgumentException($"{Name}: decode of {count} tokens from a {block.Length}-byte block into {dst.Length} values");
        outliers = Need(outliers);
        int d = HeadDim;
        for (int t = 0; t < count; t++)
            NuqDecode.Row(block.Slice(t * _codeBytes, _codeBytes), _spec.Bits, _decode, _levels, dst.Slice(t * d, d));
        if (outliers != null) NuqOutlierRows.Apply(outliers, count, d, dst);
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst) => DecodeBlockReference(block, Need(null), count, dst);

    public void DecodeBlockReference(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst)
    {
        outliers = Need(outliers);
        int d = HeadDim;
        for (int t = 0; t < count; t++)
        {
            var codes = block.Slice(t * _codeBytes, _codeBytes);
            for (int c = 0; c < d; c++) dst[t * d + c] = _zero[c] + _range[c] * _decodeLevels[NuqErrorBound.Code(codes, c, _spec.Bits)];
        }
        if (outliers == null) return;
        for (int i = 0; i < outliers.Count; i++)
        {
            var (index, h) = outliers.Entry(i);
            if (index < count * d) dst[index] = (float)BitConverter.UInt16BitsToHalf(h);
        }
    }

    /// <summary>Outliers (|u| &gt; 1 with an outlier fraction): f16 rounding. Everything else: the range times the widest
    /// error of the code interval holding its normalized value (reaching out to the value for dense specs).</summary>
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound)
    {
        int d = HeadDim;
        for (int t = 0; t < xs.Length / d; t++)
        {
            var x = xs.Slice(t * d, d);
            var b = bound.Slice(t * d, d);
            for (int c = 0; c < d; c++)
            {
                float u = (x[c] - _zero[c]) / _range[c];
                b[c] = _spec.HasOutliers && (u > 1f || u < -1f) ? NuqErrorBound.F16(x[c])
                    : _range[c] * NuqErrorBound.Interval(u, Codebook, _decodeLevels) + NuqErrorBound.Slack(_zero[c], _range[c] * (1 + Math.Abs(u)));
            }
        }
    }
}
