using System.Buffers.Binary;
using System.Numerics.Tensors;

namespace Kvq.Cache.Codecs.TurboQuant;

/// <summary>
/// TurboQuant's per-vector scalar quantizer (arXiv 2504.19874), applied to vectors that are already randomly rotated
/// (<see cref="Rotation.RotatedCodec"/> with random signs wraps it): the vector's norm s is stored in f16, and each
/// coordinate of y / s is coded by the Lloyd-Max codebook of a random unit vector's coordinate
/// (<see cref="LloydMaxCodebook"/>, no calibration), at a width per channel (<c>tq2.5</c>: the first half of the
/// channels one bit wider). With <see cref="Qjl"/> (keys), the codes are one bit narrower and the residual
/// r = y / s - decode gets TurboQuant's 1-bit QJL sketch: the signs of S r for a seeded Gaussian d x d matrix S, and
/// |r| in f16; decoding adds sqrt(pi/2) / d |r| S^T signs, an unbiased estimate of r, so q . k is unbiased.
/// Token record (bytes): [codes: sum of widths bits, LSB first, padded to a byte][s: f16]
/// [with QJL: signs, d bits padded to a byte][|r|: f16]. Every byte is counted in <see cref="BlockLayout"/>.
/// </summary>
public sealed class TurboQuantCodec : KvCodec, IKvCodecReference
{
    private readonly string _name;
    private readonly int[] _widths;          // bits per channel
    private readonly float[][] _levels;      // per channel: its codebook's levels / sqrt(d)
    private readonly LloydMaxCodebook[] _books;
    private readonly float[]? _s;            // QJL's S (d x d, row j = the j-th projection), or null
    private readonly int _codeBytes, _signBytes, _tokenBytes;
    private readonly float _qjlScale;        // sqrt(pi/2) / d

    public TurboQuantCodec(string name, int blockTokens, int headDim, int[] widths, float[]? qjl) : base(blockTokens, headDim)
    {
        if (widths.Length != headDim) throw new ArgumentException($"{widths.Length} widths for head dim {headDim}");
        if (qjl != null && qjl.Length != headDim * headDim) throw new ArgumentException($"QJL matrix of {qjl.Length} values, head dim {headDim}");
        _name = name;
        _widths = widths;
        _books = new LloydMaxCodebook[headDim];
        _levels = new float[headDim][];
        float inv = 1f / MathF.Sqrt(headDim);
        int bits = 0;
        for (int c = 0; c < headDim; c++)
        {
            _books[c] = LloydMaxCodebook.For(headDim, widths[c]);
            _levels[c] = [.. _books[c].Levels.Select(l => l * inv)];
            bits += widths[c];
        }
        _s = qjl;
        _codeBytes = (bits + 7) / 8;
        _signBytes = qjl == null ? 0 : (headDim + 7) / 8;
        _tokenBytes = _codeBytes + 2 + (qjl == null ? 0 : _signBytes + 2);
        _qjlScale = MathF.Sqrt(MathF.PI / 2) / headDim;
    }

    public override string Name => _name;
    public bool Qjl => _s != null;

    public override KvBytes BlockLayout => new((long)BlockTokens * _codeBytes, 2L * BlockTokens, 0, 0, 0,
        Qjl ? (long)BlockTokens * (_signBytes + 2) : 0);

    protected override TokenSection[] DescribeTokenSections() => [new(0, _tokenBytes)];

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot)
    {
        int d = HeadDim;
        var rec = block.Slice(slot * _tokenBytes, _tokenBytes);
        double ss = 0;
        for (int c = 0; c < d; c++) ss += (double)x[c] * x[c];
        float s = (float)Math.Sqrt(ss);
        float rs = s > 0 ? MathF.Sqrt(d) / s : 0f;
        Span<byte> codes = stackalloc byte[d];
        Span<float> r = stackalloc float[d];
        for (int c = 0; c < d; c++)
        {
            codes[c] = (byte)_books[c].Encode(x[c] * rs);
            r[c] = (s > 0 ? x[c] / s : 0f) - _levels[c][codes[c]];
        }
        rec[.._codeBytes].Clear();
        int bit = 0;
        for (int c = 0; c < d; c++)
        {
            for (int k = 0; k < _widths[c]; k++, bit++)
                if ((codes[c] >> k & 1) != 0) rec[bit >> 3] |= (byte)(1 << (bit & 7));
        }
        BinaryPrimitives.WriteHalfLittleEndian(rec.Slice(_codeBytes, 2), (Half)s);
        if (_s == null) return;
        var signs = rec.Slice(_codeBytes + 2, _signBytes);
        signs.Clear();
        for (int j = 0; j < d; j++)
            if (TensorPrimitives.Dot(_s.AsSpan(j * d, d), r) >= 0f) signs[j >> 3] |= (byte)(1 << (j & 7));
        BinaryPrimitives.WriteHalfLittleEndian(rec.Slice(_codeBytes + 2 + _signBytes, 2), (Half)TensorPrimitives.Norm(r));
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        int d = HeadDim;
        Span<float> t = stackalloc float[_s == null ? 0 : d];
        for (int tok = 0; tok < count; tok++)
        {
            var rec = block.Slice(tok * _tokenBytes, _tokenBytes);
            var o = dst.Slice(tok * d, d);
            int bit = 0;
            for (int c = 0; c < d; c++)
            {
                int w = _widths[c], p = bit >> 3;
                int window = rec[p] | (p + 1 < _codeBytes ? rec[p + 1] << 8 : 0);
                o[c] = _levels[c][(window >> (bit & 7)) & ((1 << w) - 1)];
                bit += w;
            }
            float s = (float)BinaryPrimitives.ReadHalfLittleEndian(rec.Slice(_codeBytes, 2));
            if (_s != null)
            {
                // t = S^T signs, row by row (each element's sums in the order of the reference's loop).
                var signs = rec.Slice(_codeBytes + 2, _signBytes);
                t.Clear();
                for (int j = 0; j < d; j++)
                {
                    var row = _s.AsSpan(j * d, d);
                    if ((signs[j >> 3] >> (j & 7) & 1) != 0) TensorPrimitives.Add(t, row, t);
                    else TensorPrimitives.Subtract(t, row, t);
                }
                float g = _qjlScale * (float)BinaryPrimitives.ReadHalfLittleEndian(rec.Slice(_codeBytes + 2 + _signBytes, 2));
                for (int c = 0; c < d; c++) o[c] += g * t[c];
            }
            TensorPrimitives.Multiply(o, s, o);
        }
    }

    /// <summary>Scalar twin of <see cref="DecodeBlock"/>: codes read bit by bit, S^T signs as a plain double loop order.</summary>
    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        int d = HeadDim;
        for (int tok = 0; tok < count; tok++)
        {
            var rec = block.Slice(tok * _tokenBytes, _tokenBytes);
            int bit = 0;
            for (int c = 0; c < d; c++)
            {
                int code = 0;
                for (int k = 0; k < _widths[c]; k++, bit++) code |= (rec[bit >> 3] >> (bit & 7) & 1) << k;
                dst[tok * d + c] = _levels[c][code];
            }
            float s = (float)BinaryPrimitives.ReadHalfLittleEndian(rec.Slice(_codeBytes, 2));
            if (_s != null)
            {
                var signs = rec.Slice(_codeBytes + 2, _signBytes);
                float g = _qjlScale * (float)BinaryPrimitives.ReadHalfLittleEndian(rec.Slice(_codeBytes + 2 + _signBytes, 2));
                for (int c = 0; c < d; c++)
                {
                    float t = 0f;
                    for (int j = 0; j < d; j++) t = (signs[j >> 3] >> (j & 7) & 1) != 0 ? t + _s[j * d + c] : t - _s[j * d + c];
                    dst[tok * d + c] += g * t;
                }
            }
            for (int c = 0; c < d; c++) dst[tok * d + c] *= s;
        }
    }

    /// <summary>
    /// Per coordinate, with s = |y| and u = y / s: s times the distance from u to its level (the nearer of the two
    /// levels around a threshold when u sits on one), plus |s - f16(s)| times the level, plus with QJL the residual's
    /// coordinate and the largest the estimate can be, sqrt(pi/2)/d |r| sum_j |S_jc| (|r| taken from the levels, with
    /// f16's half-ulp), plus float rounding.
    /// </summary>
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound)
    {
        int d = HeadDim;
        double rootD = Math.Sqrt(d);
        var dist = new double[d];
        var level = new double[d];
        for (int tok = 0; tok < xs.Length / d; tok++)
        {
            var x = xs.Slice(tok * d, d);
            double ss = 0, xabs = 0;
            for (int c = 0; c < d; c++) { ss += (double)x[c] * x[c]; xabs = Math.Max(xabs, Math.Abs(x[c])); }
            double s = Math.Sqrt(ss), sf = (double)(Half)(float)s;
            double r2 = 0;
            for (int c = 0; c < d; c++)
            {
                double u = s > 0 ? x[c] / s * rootD : 0;
                var lv = _books[c].Levels;
                double best = double.MaxValue, second = double.MaxValue, bestLevel = 0, secondLevel = 0;
                foreach (var l in lv)
                {
                    double e = Math.Abs(u - l);
                    if (e < best) { second = best; secondLevel = bestLevel; best = e; bestLevel = l; }
                    else if (e < second) { second = e; secondLevel = l; }
                }
                // Float rounding of u may pick the other level of a near tie.
                if (second - best < 1e-4) { best = second; bestLevel = Math.Abs(secondLevel) > Math.Abs(bestLevel) ? secondLevel : bestLevel; }
                dist[c] = best / rootD;
                level[c] = Math.Abs(bestLevel) / rootD;
                r2 += dist[c] * dist[c];
            }
            double rn = Math.Sqrt(r2) * (1 + 1.0 / 1024) + 1e-7;
            for (int c = 0; c < d; c++)
            {
                double est = 0;
                if (_s != null)
                {
                    double col = 0;
                    for (int j = 0; j < d; j++) col += Math.Abs(_s[j * d + c]);
                    est = _qjlScale * rn * col * (1 + 1e-5);
                }
                double e = s * dist[c] + Math.Abs(s - sf) * (level[c] + est) + sf * est
                           + 1e-5 * (sf * (level[c] + est) + xabs) + 1e-30;
                bound[tok * d + c] = (float)e;
            }
        }
    }
}
