using System.Runtime.Intrinsics;
using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// KVQuant values (and keys in the per-token ablation): per-token dynamic scaling. The token's k largest and k smallest
/// values (<see cref="KvQuantSpec.TokenOutliersPerTail"/>) are outlier candidates; a candidate further than
/// <see cref="KvQuantSpec.ValueMargin"/> half-ranges of the rest from the rest's middle is kept exactly (f16)
/// in the block's sparse rows beside it (<see cref="BlockOutliers"/>), the others join the dense part
/// (<see cref="TokenOutliers.SplitBeyond"/>). The non-outliers' min/max give the token's zero and range, stored in 16
/// bits (<see cref="TokenScale"/>: 10-bit log range, 6-bit zero), and each value encodes to the nearest level of this
/// layer's codebook for the stream. Block layout (T tokens): scales T*2 | codes T*ceil(D*B/8); outliers beside.
/// </summary>
public sealed class NuqTokenCodec : KvCodec, IKvQuantAccounting, IKvCodecReference
{
    private readonly KvQuantSpec _spec;
    private readonly bool _preRope;
    private readonly float[] _mids, _levels;
    private readonly int _k, _codeBytes, _codesOffset, _indexBits;
    private readonly NuqLanes? _lanes;          // fused value kernels (NuqKernels), when the machine has them
    private readonly Vector512<float> _lut;

    public override string Name => _spec.Name;
    internal override bool FusesUnderSink => true;
    public override bool PreRope => _preRope;
    public override bool HasBlockOutliers => _k > 0;
    /// <summary>Header + the nominal fraction's entries (index + f16 value each).</summary>
    public override double ExpectedOutlierBytesPerBlock => _k > 0
        ? 3 + _spec.OutlierFraction * BlockTokens * HeadDim * (_indexBits + 16) / 8.0 : 0;
    public KvQuantSpec Spec => _spec;
    public NuqCodebook Codebook { get; }
    /// <summary>Outlier candidates per tail (the GPU's device layout keeps all 2k of them per token).</summary>
    public int OutliersPerTail => _k;
    /// <summary>What each code decodes to on [-1, 1] before the token's zero and range (device backends).</summary>
    public ReadOnlySpan<float> DecodeLevels => _levels;

    public NuqTokenCodec(KvQuantSpec spec, KvSide side, int blockTokens, int headDim, NuqCodebook codebook) : base(blockTokens, headDim)
    {
        if (codebook.Bits != spec.Bits) throw new ArgumentException($"{spec.Name}: a {codebook.Bits}-bit codebook");
        _spec = spec;
        _preRope = side == KvSide.Key && !spec.PostRope;
        Codebook = codebook;
        _mids = codebook.Midpoints;
        _levels = codebook.DecodeLevels(spec.QNorm);
        _k = KvQuantSpec.TokenOutliersPerTail(spec.OutlierFraction, headDim);
        if (2 * _k >= headDim)
            throw new KvSpecException($"{spec.Name}: {2 * _k} outliers per token leave nothing of head dim {headDim}");
        _codeBytes = NuqBits.Bytes(headDim, spec.Bits);
        _codesOffset = blockTokens * 2;
        _indexBits = BlockOutliers.IndexBitsFor(blockTokens, headDim);
        if (NuqLanes.IsSupported(headDim, spec.Bits))
        {
            _lanes = NuqLanes.Natural(headDim, spec.Bits);
            _lut = NuqLanes.Repeat(_levels);
        }
    }

    /// <summary>The block's sparse rows for a format that keeps them (refusing to go without), null for a dense spec
    /// (rows passed to a dense spec are left untouched).</summary>
    private BlockOutliers? Need(BlockOutliers? outliers) => !(_k > 0) ? null
        : outliers ?? throw new ArgumentException($"{Name}: blocks of this format keep their outliers beside them; pass the block's BlockOutliers");

    /// <summary>Token t's zero and range as stored.</summary>
    private static (float Zero, float Range) ScaleOf(ReadOnlySpan<byte> block, int t) =>
        TokenScale.Decode((ushort)(block[2 * t] | block[2 * t + 1] << 8));

    public override void Accumulate(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile) =>
        Accumulate(block, Need(null), count, w, nq, acc, tile);

    /// <summary>Fused: acc += w_j (cb[code] range_j + zero_j) from the codes (NuqKernels.ValueAccumulate), with the
    /// outliers blended in by lane masks at head dim 64 (NuqKernels.ValueAccumulate64 for decode: scales decoded in the
    /// kernel), else as sparse corrections w_j (x - decoded); the decode + tile path where the kernel does not apply.</summary>
    [System.Runtime.CompilerServices.SkipLocalsInit]   // scales: every entry written before use
    public override void Accumulate(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, ReadOnlySpan<float> w, int nq,
        Span<float> acc, Span<float> tile)
    {
        outliers = Need(outliers);
        if (_lanes == null || count == 0)
        {
            DecodeBlock(block, outliers, count, tile);
            Attention.TileMath.Accumulate(tile[..(count * HeadDim)], count, HeadDim, w, nq, acc);
            return;
        }
        if (block.Length < BlockBytes || (uint)count > (uint)BlockTokens || w.Length < nq * count || acc.Length < nq * HeadDim
            || tile.Length < count * HeadDim)
            throw new ArgumentException($"{Name}: accumulate of {nq} rows over {count} tokens with a {block.Length}-byte block, " +
                $"{w.Length} weights, {acc.Length} accumulator values, {tile.Length} tile values");
        if (HeadDim == 64)
        {
            // The register kernels' case: each token's outliers blended in as a lane mask and replacement row.
            int rows = outliers != null && outliers.Count > 0 ? count : 0;   // no rows: no outliers to blend
            Span<ulong> masks = rows <= 64 ? stackalloc ulong[rows] : new ulong[rows];
            Span<float> dense = rows <= 64 ? stackalloc float[rows * 64] : new float[rows * 64];
            if (rows > 0) outliers!.ToLanes(count, HeadDim, _lanes.LaneOf, masks, dense);
            if (nq <= 4)
            {
                // Decode: scales decoded inside the kernel.
                NuqKernels.ValueAccumulate64(_lanes, block, count, _codesOffset, _codeBytes, masks, dense, _lut, w, nq, acc);
                return;
            }
            Span<float> tileScales = stackalloc float[2 * count];
            for (int t = 0; t < count; t++) (tileScales[2 * t], tileScales[2 * t + 1]) = ScaleOf(block, t);
            NuqKernels.ValueAccumulate(_lanes, block, count, tileScales, _codesOffset, _codeBytes, 0, 0, 0, masks, dense, _lut, w, nq, acc, tile);
            return;
        }
        Span<float> scales = stackalloc float[2 * count];
        for (int t = 0; t < count; t++) (scales[2 * t], scales[2 * t + 1]) = ScaleOf(block, t);
        NuqKernels.ValueAccumulate(_lanes, block, count, scales, _codesOffset, _codeBytes, 0, 0, 0, _lut, w, nq, acc, tile);
        if (outliers != null) AddOutlierValues(block, outliers, count, scales, w, nq, acc);
    }

    /// <summary>acc[i, c] += w[i, t] (x - decoded) for each exact outlier x at (t, c): one pass over the block's
    /// entries, unpacked at once (<see cref="NuqOutlierRows.Unpacked"/>).</summary>
    private void AddOutlierValues(ReadOnlySpan<byte> block, BlockOutliers outliers, int count, ReadOnlySpan<float> scales,
        ReadOnlySpan<float> w, int nq, Span<float> acc)
    {
        int total = outliers.Count, d = HeadDim;
        if (total == 0) return;
        using var e = new NuqOutlierRows.Unpacked(total);
        int n = e.Read(outliers, count * d);
        int bits = _spec.Bits, mask = (1 << bits) - 1, codeBytes = _codeBytes, codesOffset = _codesOffset;
        int shift = NuqOutlierRows.Unpacked.TokenShift(d);
        var levels = _levels;
        for (int i = 0; i < n; i++)
        {
            int ix = e.Index[i];
            int t = shift >= 0 ? ix >> shift : ix / d, c = ix - t * d;
            int bit = c * bits, at = codesOffset + t * codeBytes + (bit >> 3);
            int word = at + 1 < block.Length ? block[at] | block[at + 1] << 8 : block[at];
            float delta = e.Value[i] - (scales[2 * t] + scales[2 * t + 1] * levels[(word >> (bit & 7)) & mask]);
            for (int r = 0; r < nq; r++) acc[r * d + c] += w[r * count + t] * delta;
        }
    }

    public override KvBytes BlockLayout => new(BlockTokens * (long)_codeBytes, BlockTokens * 2L, 0, 0, 0, 0);

    /// <summary>Scales (zero and range packed), codes: each a fixed record per token (outliers move with
    /// <see cref="CopySlot(ReadOnlySpan{byte}, BlockOutliers?, int, Span{byte}, BlockOutliers?, int)"/>).</summary>
    protected override TokenSection[] DescribeTokenSections() => [new(0, 2), new(_codesOffset, _codeBytes)];

    public override void CopySlot(ReadOnlySpan<byte> src, int srcSlot, Span<byte> dst, int dstSlot) =>
        CopySlot(src, Need(null), srcSlot, dst, null, dstSlot);

    public override void CopySlot(ReadOnlySpan<byte> src, BlockOutliers? srcOutliers, int srcSlot, Span<byte> dst,
        BlockOutliers? dstOutliers, int dstSlot)
    {
        base.CopySlot(src, srcSlot, dst, dstSlot);
        if (_k > 0) NuqOutlierRows.CopyToken(Need(srcOutliers)!, srcSlot, Need(dstOutliers)!, dstSlot, HeadDim, _indexBits);
    }

    public double KvQuantBitsPerElement => KvQuantAccounting.PerToken(_spec.Bits, _spec.OutlierFraction, HeadDim, BlockTokens);

    /// <summary>Splits a token as encoding does: outlier flags, their channels, the stored scale, and the scale the codes
    /// are chosen under (the stored one, except under <c>:fit</c>, where the codes are the min/max scale's).</summary>
    private (int Outliers, ushort Packed, float Zero, float Range, float CodeZero, float CodeRange) Split(ReadOnlySpan<float> x,
        Span<bool> isOutlier, Span<int> idx)
    {
        float min, max;
        int n = 0;
        if (_k > 0) (min, max, n) = TokenOutliers.SplitBeyond(x, _k, _spec.ValueMargin, isOutlier, idx);
        else
        {
            isOutlier[..x.Length].Clear();
            min = float.PositiveInfinity;
            max = float.NegativeInfinity;
            foreach (float v in x) { min = Math.Min(min, v); max = Math.Max(max, v); }
        }
        var (packed, zero, range) = TokenScale.Encode(min, max);
        if (_spec.Clip) (packed, zero, range) = BestScale(x, isOutlier, min, max, packed);
        if (_spec.Fit)
        {
            var (fp, fz, fr) = FittedScale(x, isOutlier, zero, range, packed);
            return (n, fp, fz, fr, zero, range);
        }
        return (n, packed, zero, range, zero, range);
    }

    /// <summary>Code of normalized value u: the nearest level (ties to the lower), by the codebook's midpoints.</summary>
    private int CodeOf(float u)
    {
        var mids = _mids;
        int code = 0;
        for (int i = 0; i < mids.Length; i++) code += u > mids[i] ? 1 : 0;
        return code;
    }

    /// <summary><c>:fit</c>: with every non-outlier's code fixed by (<paramref name="zero"/>, <paramref name="range"/>),
    /// the least-squares affine map a + b x level of those codes, rounded to the 16-bit scales around it (range code
    /// below and above log2 b, zero step below and above a), and kept only where its squared error beats the min/max
    /// scale's. A token whose codes are all equal (nothing to fit a range to) keeps the min/max scale.</summary>
    private (ushort Packed, float Zero, float Range) FittedScale(ReadOnlySpan<float> x, ReadOnlySpan<bool> isOutlier,
        float zero, float range, ushort minMax)
    {
        int d = x.Length, n = 0;
        Span<byte> codes = d <= 512 ? stackalloc byte[d] : new byte[d];
        double sl = 0, sx = 0, sll = 0, slx = 0;
        for (int c = 0; c < d; c++)
        {
            if (isOutlier[c]) continue;
            int code = CodeOf((x[c] - zero) / range);   // as EncodeToken writes it
            codes[c] = (byte)code;
            double l = _levels[code];
            n++;
            sl += l;
            sx += x[c];
            sll += l * l;
            slx += l * x[c];
        }
        double varL = sll - sl * sl / Math.Max(1, n);
        var best = (minMax, zero, range);
        if (n < 2 || !(varL > 1e-12 * Math.Max(1, sll))) return best;
        double b = (slx - sl * sx / n) / varL, a = (sx - b * sl) / n;
        if (!(b > 0) || !double.IsFinite(a)) return best;
        float bestErr = FixedCodeError(x, isOutlier, codes, zero, range);
        int rb = (int)Math.Floor(32 * (Math.Log2(b) + 16));
        for (int r = rb; r <= rb + 1; r++)
        {
            if (r < 0 || r >= TokenScale.RangeCodes) continue;
            int z0 = (int)Math.Floor(a / (TokenScale.Range(r) / 16));
            for (int z = z0; z <= z0 + 1; z++)
            {
                var (packed, fz, fr) = TokenScale.Pack(r, z);
                float e = FixedCodeError(x, isOutlier, codes, fz, fr);
                if (e < bestErr) { bestErr = e; best = (packed, fz, fr); }
            }
        }
        return best;
    }

    private float FixedCodeError(ReadOnlySpan<float> x, ReadOnlySpan<bool> isOutlier, ReadOnlySpan<byte> codes, float zero, float range)
    {
        float err = 0;
        for (int c = 0; c < x.Length; c++)
        {
            if (isOutlier[c]) continue;
            float e = x[c] - (zero + range * _levels[codes[c]]);
            err += e * e;
        }
        return err;
    }

    /// <summary>Range steps tried below the min/max scale under <c>:clip</c> (each 2.2% narrower: down to ~0.70x).</summary>
    private const int ClipSteps = 16;

    /// <summary><c>:clip</c>: among the 16-bit scales from the min/max one down to ~0.70x its range (zero rounded to the
    /// middle and its two neighbours), the one whose decoded non-outliers have the least squared error with this
    /// codebook (values past the range take the outer level). Encoder only: the decoder reads any scale.</summary>
    private (ushort Packed, float Zero, float Range) BestScale(ReadOnlySpan<float> x, ReadOnlySpan<bool> isOutlier, float min, float max,
        ushort minMax)
    {
        var (z0, r0) = TokenScale.Decode(minMax);
        float bestErr = Error(x, isOutlier, z0, r0);
        var best = (minMax, z0, r0);
        int rc = minMax & (TokenScale.RangeCodes - 1);
        float mid = (max + min) * 0.5f;
        for (int r = rc - 1; r >= Math.Max(0, rc - ClipSteps); r--)
        {
            int zc = TokenScale.ZeroCode(mid, r);
            for (int dz = -1; dz <= 1; dz++)
            {
                var (packed, zero, range) = TokenScale.Pack(r, zc + dz);
                if (packed == best.Item1) continue;
                float e = Error(x, isOutlier, zero, range);
                if (e < bestErr) { bestErr = e; best = (packed, zero, range); }
            }
        }
        return best;
    }

    private float MaxAbsLevel => Math.Max(Math.Abs(_levels[0]), Math.Abs(_levels[^1]));

    private float Error(ReadOnlySpan<float> x, ReadOnlySpan<bool> isOutlier, float zero, float range)
    {
        float inv = 1f / range, err = 0;
        for (int c = 0; c < x.Length; c++)
        {
            if (isOutlier[c]) continue;
            float e = x[c] - (zero + range * _levels[CodeOf((x[c] - zero) * inv)]);
            err += e * e;
        }
        return err;
    }

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) => EncodeToken(x, block, Need(null), slot);

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, BlockOutliers? outliers, int slot)
    {
        if (x.Length != HeadDim || block.Length < BlockBytes || (uint)slot >= (uint)BlockTokens)
            throw new ArgumentException($"{Name}: encode of {x.Length} values into slot {slot} of a {block.Length}-byte block");
        outliers = Need(outliers);
        int d = HeadDim;
        Span<bool> isOutlier = stackalloc bool[d];
        Span<int> idx = stackalloc int[Math.Max(1, 2 * _k)];
        Span<ushort> halves = stackalloc ushort[Math.Max(1, 2 * _k)];
        Span<byte> codes = stackalloc byte[d];
        var (n, packed, _, _, codeZero, codeRange) = Split(x, isOutlier, idx);
        block[2 * slot] = (byte)packed;
        block[2 * slot + 1] = (byte)(packed >> 8);
        for (int c = 0; c < d; c++) codes[c] = (byte)CodeOf((x[c] - codeZero) / codeRange);
        NuqBits.Pack(codes, _spec.Bits, block.Slice(_codesOffset + slot * _codeBytes, _codeBytes));
        for (int j = 0; j < n; j++) halves[j] = QuantFormats.SingleToHalf(Math.Clamp(x[idx[j]], -65504f, 65504f));
        outliers?.SetToken(slot, d, _indexBits, idx[..n], halves[..n]);
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) => DecodeBlock(block, Need(null), count, dst);

    public override void DecodeBlock(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst)
    {
        if (block.Length < BlockBytes || (uint)count > (uint)BlockTokens || dst.Length < count * HeadDim)
            throw new ArgumentException($"{Name}: decode of {count} tokens from a {block.Length}-byte block into {dst.Length} values");
        outliers = Need(outliers);
        int d = HeadDim;
        Span<float> lut = stackalloc float[_levels.Length];
        for (int t = 0; t < count; t++)
        {
            var (zero, range) = ScaleOf(block, t);
            for (int q = 0; q < lut.Length; q++) lut[q] = zero + range * _levels[q];
            NuqDecode.Row(block.Slice(_codesOffset + t * _codeBytes, _codeBytes), _spec.Bits, lut, 0, dst.Slice(t * d, d));
        }
        if (outliers != null) NuqOutlierRows.Apply(outliers, count, d, dst);
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst) => DecodeBlockReference(block, Need(null), count, dst);

    public void DecodeBlockReference(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst)
    {
        outliers = Need(outliers);
        int d = HeadDim;
        for (int t = 0; t < count; t++)
        {
            int packed = block[2 * t] | block[2 * t + 1] << 8;
            float range = (float)Math.Pow(2, (packed & 1023) / 32.0 - 16);
            int z = (packed >> 10) >= 32 ? (packed >> 10) - 64 : packed >> 10;
            float zero = z * (range / 16);
            var codes = block.Slice(_codesOffset + t * _codeBytes, _codeBytes);
            for (int c = 0; c < d; c++) dst[t * d + c] = zero + range * _levels[NuqErrorBound.Code(codes, c, _spec.Bits)];
        }
        if (outliers == null) return;
        for (int i = 0; i < outliers.Count; i++)
        {
            var (index, h) = outliers.Entry(i);
            if (index < count * d) dst[index] = (float)BitConverter.UInt16BitsToHalf(h);
        }
    }

    /// <summary>The kept outliers: f16 rounding. The rest: the token's stored range times the widest error of the code
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
            var (_, _, zero, range, codeZero, codeRange) = Split(x, isOutlier, idx);
            // Under :fit the codes are the min/max scale's and the stored scale moves their decoded values by at most
            // |zero shift| + |range change| x |level|.
            float moved = Math.Abs(zero - codeZero) + Math.Abs(range - codeRange) * MaxAbsLevel;
            for (int c = 0; c < d; c++)
            {
                if (isOutlier[c]) { b[c] = NuqErrorBound.F16(x[c]); continue; }
                float u = (x[c] - codeZero) / codeRange;
                b[c] = codeRange * NuqErrorBound.Interval(u, Codebook, _levels) + moved
                    + NuqErrorBound.Slack(zero, range * (1 + Math.Abs(u))) + NuqErrorBound.Slack(codeZero, codeRange * (1 + Math.Abs(u)));
            }
        }
    }
}
