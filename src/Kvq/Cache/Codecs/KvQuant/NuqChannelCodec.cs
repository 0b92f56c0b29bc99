using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// KVQuant keys: static per-channel scaling from the profile (this layer and KV head), nearest level of this layer's
/// codebook, B-bit codes, and values outside [-1, 1] after normalization kept exactly (f16 + channel index) in
/// <see cref="KvQuantSpec.KeyOutlierSlots"/> fixed per-token slots. When a token has more outliers than slots, the
/// ones with the largest |normalized value| keep a slot and the rest are clamped to the extreme level (counted in
/// <see cref="Counters"/>). Pre-RoPE unless the spec says post (then the sequence rotates keys before encoding and
/// the scales and codebook are the post-RoPE ones).
/// Block layout (T tokens): outlier values T*S*2 | codes T*ceil(D*B/8) | outlier indices T*S*(1 or 2).
/// </summary>
public sealed class NuqChannelCodec : KvCodec, IKvQuantAccounting, IKvCodecReference
{
    private readonly KvQuantSpec _spec;
    private readonly KvSide _side;
    private readonly float[] _zero, _range;   // (HeadDim)
    private readonly float[] _mids;           // codebook decision thresholds (levels - 1)
    private readonly float[] _decode;         // (HeadDim, levels): zero_c + range_c * level
    private readonly int _levels, _codeBytes, _codesOffset;
    private readonly float[] _decodeLevels;  // what each code decodes to on [-1, 1] (Q-Norm applied)
    private readonly OutlierSlots _slots;
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
    public override bool PreRope => !_spec.PostRope;
    public KvQuantSpec Spec => _spec;
    public NuqCodebook Codebook { get; }
    public KvQuantCounters Counters { get; } = new();
    public int OutlierSlots => _slots.Slots;
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
        _side = side;
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
        int slots = spec.KeySlots ?? KvQuantSpec.KeyOutlierSlots(spec.OutlierFraction, headDim);
        _codesOffset = blockTokens * slots * 2;
        _slots = new OutlierSlots(slots, headDim, blockTokens, 0, _codesOffset + blockTokens * _codeBytes);
        _fused = NuqLanes.IsSupported(headDim, spec.Bits);
        if (_fused) _lut = NuqLanes.Repeat(levels);
    }

    private KeyLanes Lanes(NuqLanes lanes) => new(lanes, lanes.InLaneOrder(_zero), lanes.InLaneOrder(_range));

    /// <summary>Fused: codes -> codebook -> scale/zero -> outliers -> RoPE at each position -> dots, in registers
    /// (NuqKernels.KeyScores); the base class's decode + rotate + tile path where the kernel does not apply.</summary>
    public override void ScoresPreRope(ReadOnlySpan<byte> block, int count, ReadOnlySpan<int> positions, Rope rope,
        ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        if (!_fused || rope.RopeDims != HeadDim || rope.HeadDim != HeadDim || count == 0)
        {
            base.ScoresPreRope(block, count, positions, rope, q, nq, scores, tile);
            return;
        }
        Check(block, count, q, nq, scores, tile);
        if (positions.Length < count) throw new ArgumentException($"{Name}: {positions.Length} positions for {count} tokens");
        var set = rope.Style == RopeStyle.Normal
            ? _normal ??= Lanes(NuqLanes.RopeOrder(HeadDim, _spec.Bits, RopeStyle.Normal))
            : _neox ??= Lanes(NuqLanes.RopeOrder(HeadDim, _spec.Bits, rope.Style));
        NuqKernels.KeyScores(set.Lanes, block, count, positions[..count], rope, _codesOffset, _codeBytes, _slots.Slots, 0,
            _codesOffset + BlockTokens * _codeBytes, _slots.Empty, _lut, set.Zero, set.Range, q, nq, scores, tile);
    }

    /// <summary>Post-RoPE keys (the :post ablation): the same fused kernel without the rotation.</summary>
    public override void Scores(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        if (!_fused || count == 0)
        {
            base.Scores(block, count, q, nq, scores, tile);
            return;
        }
        Check(block, count, q, nq, scores, tile);
        var set = _natural ??= Lanes(NuqLanes.Natural(HeadDim, _spec.Bits));
        NuqKernels.KeyScores(set.Lanes, block, count, default, null, _codesOffset, _codeBytes, _slots.Slots, 0,
            _codesOffset + BlockTokens * _codeBytes, _slots.Empty, _lut, set.Zero, set.Range, q, nq, scores, tile);
    }

    private void Check(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        if (block.Length < BlockBytes || (uint)count > (uint)BlockTokens || q.Length < nq * HeadDim || scores.Length < nq * count
            || tile.Length < count * HeadDim)
            throw new ArgumentException($"{Name}: scores of {nq} rows over {count} tokens with a {block.Length}-byte block, " +
                $"{q.Length} query values, {scores.Length} scores, {tile.Length} tile values");
    }

    public override KvBytes BlockLayout =>
        new(BlockTokens * (long)_codeBytes, 0, 0, _slots.ValueBytes, _slots.IndicesBytes, 0);

    /// <summary>Outlier values, codes, outlier indices: each a fixed record per token (static scales live in the codec).</summary>
    protected override TokenSection[] DescribeTokenSections() =>
        [new(0, 2 * _slots.Slots), new(_codesOffset, _codeBytes), new(_codesOffset + BlockTokens * _codeBytes, _slots.Slots * _slots.IndexBytes)];

    public double KvQuantBitsPerElement => KvQuantAccounting.PerChannel(_spec.Bits, _spec.OutlierFraction, HeadDim);

    /// <summary>Normalized value of channel c: (x - zero) / range.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Normalize(float x, int c) => (x - _zero[c]) / _range[c];

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot)
    {
        if (x.Length != HeadDim || block.Length < BlockBytes || (uint)slot >= (uint)BlockTokens)
            throw new ArgumentException($"{Name}: encode of {x.Length} values into slot {slot} of a {block.Length}-byte block");
        int d = HeadDim;
        Span<byte> codes = stackalloc byte[d];
        var mids = _mids;
        for (int c = 0; c < d; c++)
        {
            float u = (x[c] - _zero[c]) / _range[c];
            int code = 0;
            for (int i = 0; i < mids.Length; i++) code += u > mids[i] ? 1 : 0;
            codes[c] = (byte)code;   // outliers too: a clamped one decodes to its extreme level
        }
        NuqBits.Pack(codes, _spec.Bits, block.Slice(_codesOffset + slot * _codeBytes, _codeBytes));
        int s = _slots.Slots;
        if (s == 0)
        {
            KvQuantCounters.Record(Counters, _side, d, 0, 0);
            return;
        }
        Span<int> kept = stackalloc int[s];
        var (n, k) = SelectOutliers(x, kept);
        for (int j = 0; j < s; j++)
        {
            if (j < k) _slots.Set(block, slot, j, kept[j], x[kept[j]]);
            else _slots.Set(block, slot, j, -1, 0f);
        }
        KvQuantCounters.Record(Counters, _side, d, k, n - k);
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        if (block.Length < BlockBytes || (uint)count > (uint)BlockTokens || dst.Length < count * HeadDim)
            throw new ArgumentException($"{Name}: decode of {count} tokens from a {block.Length}-byte block into {dst.Length} values");
        int d = HeadDim;
        for (int t = 0; t < count; t++)
        {
            var row = dst.Slice(t * d, d);
            NuqDecode.Row(block.Slice(_codesOffset + t * _codeBytes, _codeBytes), _spec.Bits, _decode, _levels, row);
            if (_slots.Slots > 0) _slots.Apply(block, t, row);
        }
    }

    /// <summary>Which of a token's outliers keep a slot: the <see cref="OutlierSlots"/> largest |u| (ties to the lower
    /// channel). Writes the kept channels in channel order and returns how many there are of each.</summary>
    private (int Outliers, int Kept) SelectOutliers(ReadOnlySpan<float> x, Span<int> kept)
    {
        int d = HeadDim, s = _slots.Slots, n = 0;
        if (s == 0) return (0, 0);
        Span<int> all = stackalloc int[d];
        Span<float> mag = stackalloc float[d];
        for (int c = 0; c < d; c++)
        {
            float u = (x[c] - _zero[c]) / _range[c];
            if (u > 1f || u < -1f) { all[n] = c; mag[n++] = Math.Abs(u); }
        }
        if (n <= s)
        {
            all[..n].CopyTo(kept);
            return (n, n);
        }
        Span<bool> keep = stackalloc bool[n];
        for (int k = 0; k < s; k++)
        {
            int best = -1;
            for (int i = 0; i < n; i++)
                if (!keep[i] && (best < 0 || mag[i] > mag[best])) best = i;
            keep[best] = true;
        }
        int w = 0;
        for (int i = 0; i < n; i++) if (keep[i]) kept[w++] = all[i];
        return (n, s);
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        int d = HeadDim, s = _slots.Slots, ib = _slots.IndexBytes, idxAt = _codesOffset + BlockTokens * _codeBytes;
        for (int t = 0; t < count; t++)
        {
            var codes = block.Slice(_codesOffset + t * _codeBytes, _codeBytes);
            for (int c = 0; c < d; c++) dst[t * d + c] = _zero[c] + _range[c] * _decodeLevels[NuqErrorBound.Code(codes, c, _spec.Bits)];
            for (int j = 0; j < s; j++)
            {
                int i = t * s + j, idx = NuqErrorBound.Index(block, idxAt + i * ib, ib);
                if (idx != _slots.Empty) dst[t * d + idx] = NuqErrorBound.Half(block, 2 * i);
            }
        }
    }

    /// <summary>Outliers that keep a slot: f16 rounding. Everything else: the range times the widest error of the
    /// code interval holding its normalized value (reaching out to the value when it was clamped).</summary>
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound)
    {
        int d = HeadDim;
        Span<int> kept = stackalloc int[Math.Max(1, _slots.Slots)];
        for (int t = 0; t < xs.Length / d; t++)
        {
            var x = xs.Slice(t * d, d);
            var b = bound.Slice(t * d, d);
            for (int c = 0; c < d; c++)
            {
                float u = (x[c] - _zero[c]) / _range[c];
                b[c] = _range[c] * NuqErrorBound.Interval(u, Codebook, _decodeLevels) + NuqErrorBound.Slack(_zero[c], _range[c] * (1 + Math.Abs(u)));
            }
            var (_, k) = SelectOutliers(x, kept);
            for (int j = 0; j < k; j++) b[kept[j]] = NuqErrorBound.F16(x[kept[j]]);
        }
    }
}
