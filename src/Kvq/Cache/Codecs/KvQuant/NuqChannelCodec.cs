using System.Runtime.CompilerServices;
using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// KVQuant keys: static per-channel scaling from the profile (this layer and KV head), nearest level of this layer's
/// codebook, B-bit codes, and every value outside [-1, 1] after normalization kept exactly (f16) in the block's sparse
/// rows beside it (<see cref="BlockOutliers"/>: no fixed slots, nothing clamped). Pre-RoPE unless the spec says post
/// (then the sequence rotates keys before encoding and the scales and codebook are the post-RoPE ones).
/// Block layout (T tokens, channel-major): channel c's codes of all T tokens packed together (token t at bits
/// [tB, tB+B) of bytes [c*ceil(T*B/8), (c+1)*ceil(T*B/8))), D*ceil(T*B/8) bytes in all, so the fused score kernel
/// (<see cref="NuqChannelKernels"/>) decodes one channel of 16 tokens with one load, one byte permute and one table
/// permute; the outliers beside it; the per-channel scales live in the profile. Tokens share bytes, so a slot is
/// copied bit by bit (<see cref="CopySlot(ReadOnlySpan{byte}, BlockOutliers?, int, Span{byte}, BlockOutliers?, int)"/>).
/// Dense specs (no -F%) have no sparse part: values outside [-1, 1] decode to the extreme level (min/max calibration).
/// </summary>
public sealed class NuqChannelCodec : KvCodec, IKvQuantAccounting, IKvCodecReference
{
    private readonly KvQuantSpec _spec;
    private readonly float[] _zero, _range;   // (HeadDim)
    private readonly float[] _mids;           // codebook decision thresholds (levels - 1)
    private readonly float[] _decode;         // (HeadDim, levels): zero_c + range_c * level
    private readonly int _levels, _chanBytes, _indexBits;
    private readonly float[] _decodeLevels;  // what each code decodes to on [-1, 1] (Q-Norm applied)
    // Fused kernel (NuqChannelKernels): per-channel 16-lane tables, and the RoPE offsets' transposed angle tables of
    // the last rope seen (one per model in practice).
    private readonly bool _fused;
    private readonly float[] _luts = [];
    private NuqChannelKernels.DeltaTables? _deltas;
    private readonly System.Runtime.Intrinsics.Vector512<byte>[]? _controls;   // the buffered kernel's byte permutes

    public override string Name => _spec.Name;
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
        _chanBytes = NuqBits.Bytes(blockTokens, spec.Bits);
        _indexBits = BlockOutliers.IndexBitsFor(blockTokens, headDim);
        _fused = NuqChannelKernels.IsSupported(spec.Bits);
        if (_fused) _luts = NuqChannelKernels.ChannelTables(_zero, _range, levels);
        if (_fused && NuqChannelKernels.Buffered(headDim, blockTokens, 1)) _controls = NuqChannelKernels.GroupControls(_chanBytes, spec.Bits);
    }

    /// <summary>The block's sparse rows for a format that keeps them (refusing to go without), null for a dense spec
    /// (rows passed to a dense spec are left untouched).</summary>
    private BlockOutliers? Need(BlockOutliers? outliers) => !(_spec.HasOutliers) ? null
        : outliers ?? throw new ArgumentException($"{Name}: blocks of this format keep their outliers beside them; pass the block's BlockOutliers");

    public override void ScoresPreRope(ReadOnlySpan<byte> block, int count, ReadOnlySpan<int> positions, Rope rope,
        ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile) =>
        ScoresPreRope(block, Need(null), count, positions, rope, q, nq, scores, tile);

    public override void Scores(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile) =>
        Scores(block, Need(null), count, q, nq, scores, tile);

    /// <summary>Fused: codes -> per-channel table (codebook, scale and zero) -> exact outliers blended into their
    /// lanes -> RoPE at each position -> dots, tokens in lanes and in registers (<see cref="NuqChannelKernels"/>); the
    /// decode + rotate + tile path where the kernel does not apply.</summary>
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
        var table = rope.Table;
        var deltas = _deltas;
        if (deltas == null || deltas.Table != table) _deltas = deltas = new NuqChannelKernels.DeltaTables(table);
        if (_controls != null && NuqChannelKernels.Buffered(HeadDim, BlockTokens, nq))
        {
            // Decode (at most 8 query rows, blocks of up to 32 tokens): the buffered kernel, outliers as sorted entries.
            using var e = new NuqOutlierRows.Unpacked(outliers?.Count ?? 0);
            int n = outliers == null ? 0 : e.Read(outliers, count * HeadDim);
            NuqChannelKernels.KeyScoresBuffered(block[..(HeadDim * _chanBytes)], _chanBytes, _spec.Bits, HeadDim, count, _luts, _controls,
                e.Index[..n], e.Value[..n], rope, positions, deltas, q, nq, scores);
            return;
        }
        Fused(block, outliers, count, rope, positions, deltas, q, nq, scores, tile);
    }

    /// <summary>Post-RoPE keys (the :post ablation): the same fused kernel without the rotation.</summary>
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
        Fused(block, outliers, count, null, default, null, q, nq, scores, tile);
    }

    /// <summary>The block's outliers as per-channel lane masks (stack buffers up to 32 KB) and the channel-major kernel.</summary>
    [SkipLocalsInit]   // ToChannelLanes clears the masks and writes every value a set bit selects
    private void Fused(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Rope? rope, ReadOnlySpan<int> positions,
        NuqChannelKernels.DeltaTables? deltas, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        int groups = (count + 15) >> 4, cells = HeadDim * groups;
        bool sparse = outliers != null && outliers.Count > 0;
        int n = sparse ? cells : 0;   // no outliers: empty masks
        Span<ushort> masks = n <= 1024 ? stackalloc ushort[n] : new ushort[n];
        Span<float> dense = n <= 512 ? stackalloc float[n * 16] : new float[n * 16];
        if (sparse) outliers!.ToChannelLanes(count, HeadDim, masks, dense);
        NuqChannelKernels.KeyScores(block[..(HeadDim * _chanBytes)], _chanBytes, _spec.Bits, HeadDim, count, _luts, masks, dense, rope,
            positions, deltas, q, nq, scores, tile);
    }

    private void Check(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        if (block.Length < BlockBytes || (uint)count > (uint)BlockTokens || q.Length < nq * HeadDim || scores.Length < nq * count
            || tile.Length < count * HeadDim)
            throw new ArgumentException($"{Name}: scores of {nq} rows over {count} tokens with a {block.Length}-byte block, " +
                $"{q.Length} query values, {scores.Length} scores, {tile.Length} tile values");
    }

    public override KvBytes BlockLayout => KvBytes.CodesOnly(HeadDim * (long)_chanBytes);

    /// <summary>Channel-major codes: tokens share bytes, so no byte sections, but slots copy bit by bit.</summary>
    public override bool CanCopySlots => true;

    public override void CopySlot(ReadOnlySpan<byte> src, int srcSlot, Span<byte> dst, int dstSlot) =>
        CopySlot(src, Need(null), srcSlot, dst, null, dstSlot);

    public override void CopySlot(ReadOnlySpan<byte> src, BlockOutliers? srcOutliers, int srcSlot, Span<byte> dst,
        BlockOutliers? dstOutliers, int dstSlot)
    {
        if ((uint)srcSlot >= (uint)BlockTokens || (uint)dstSlot >= (uint)BlockTokens || src.Length < BlockBytes || dst.Length < BlockBytes)
            throw new ArgumentOutOfRangeException(nameof(srcSlot), $"{Name}: slots {srcSlot} -> {dstSlot} outside 0..{BlockTokens - 1} " +
                $"or blocks of {src.Length} / {dst.Length} bytes");
        int cb = _chanBytes, bits = _spec.Bits;
        for (int c = 0; c < HeadDim; c++)
            NuqBits.Set(dst.Slice(c * cb, cb), dstSlot, bits, NuqErrorBound.Code(src.Slice(c * cb, cb), srcSlot, bits));
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
        int d = HeadDim, n = 0;
        Span<byte> codes = stackalloc byte[d];
        Span<int> channels = stackalloc int[d];
        Span<ushort> halves = stackalloc ushort[d];
        var mids = _mids;
        for (int c = 0; c < d; c++)
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
        int bits = _spec.Bits, pad = _chanBytes * 8 - BlockTokens * bits;
        for (int c = 0; c < d; c++)
        {
            var chunk = block.Slice(c * _chanBytes, _chanBytes);
            NuqBits.Set(chunk, slot, bits, codes[c]);
            // The last slot also zeroes the channel's padding bits, so a full block's bytes depend only on its tokens.
            if (slot == BlockTokens - 1 && pad > 0) chunk[^1] &= (byte)(0xFF >> pad);
        }
        outliers?.SetToken(slot, d, _indexBits, channels[..n], halves[..n]);
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) => DecodeBlock(block, Need(null), count, dst);

    public override void DecodeBlock(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst)
    {
        if (block.Length < BlockBytes || (uint)count > (uint)BlockTokens || dst.Length < count * HeadDim)
            throw new ArgumentException($"{Name}: decode of {count} tokens from a {block.Length}-byte block into {dst.Length} values");
        outliers = Need(outliers);
        int d = HeadDim;
        if (count == 0) return;
        Span<float> column = count <= 1024 ? stackalloc float[count] : new float[count];
        for (int c = 0; c < d; c++)
        {
            NuqDecode.Row(block.Slice(c * _chanBytes, _chanBytes), _spec.Bits, _decode.AsSpan(c * _levels, _levels), 0, column);
            for (int t = 0; t < count; t++) dst[t * d + c] = column[t];
        }
        if (outliers != null) NuqOutlierRows.Apply(outliers, count, d, dst);
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst) => DecodeBlockReference(block, Need(null), count, dst);

    public void DecodeBlockReference(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst)
    {
        outliers = Need(outliers);
        int d = HeadDim;
        for (int c = 0; c < d; c++)
        {
            var codes = block.Slice(c * _chanBytes, _chanBytes);
            for (int t = 0; t < count; t++) dst[t * d + c] = _zero[c] + _range[c] * _decodeLevels[NuqErrorBound.Code(codes, t, _spec.Bits)];
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
