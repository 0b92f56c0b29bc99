using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Kvq.Cache.Codecs;

/// <summary>
/// llama.cpp's q8_0 cache type, byte for byte. Each token's HeadDim values are cut into groups of 32 along the head
/// dimension (QK8_0); a group is ggml's block_q8_0: an f16 scale d = max|x| / 127, then 32 int8 codes round(x / d)
/// (34 bytes per 32 values = 8.5 bits). Encoding follows ggml's quantize_row_q8_0_ref: x is multiplied by the f32
/// reciprocal of the unrounded d and rounded half away from zero; decoding is code * f16(d).
/// Block layout: token t's groups at t * (HeadDim / 32) * 34 bytes, each [d: f16 LE][qs: 32 x int8].
/// Encoding is ggml's (shared with the weight formats in Kvq.Tensors.Quant); decoding and the fused scores are
/// specialised here for the cache's token-major blocks.
/// </summary>
public sealed class Q8_0Codec : KvCodec, IKvCodecReference
{
    /// <summary>Values per ggml block (QK8_0).</summary>
    public const int GroupValues = 32;
    /// <summary>Bytes per ggml block: f16 scale + 32 int8 codes.</summary>
    public const int GroupBytes = 2 + GroupValues;

    private readonly int _groups;      // ggml blocks per token
    private readonly int _tokenBytes;  // bytes per token

    public Q8_0Codec(int blockTokens, int headDim) : base(blockTokens, headDim)
    {
        if (headDim % GroupValues != 0)
            throw new KvSpecException($"q8_0 stores groups of {GroupValues} values along the head dimension (llama.cpp's " +
                $"QK8_0 = {GroupValues}); head dim {headDim} is not a multiple of {GroupValues}");
        _groups = headDim / GroupValues;
        _tokenBytes = _groups * GroupBytes;
    }

    public override string Name => "q8_0";

    public override KvBytes BlockLayout =>
        new((long)BlockTokens * HeadDim, 2L * BlockTokens * _groups, 0, 0, 0, 0);

    protected override TokenSection[] DescribeTokenSections() => [new(0, _tokenBytes)];

    /// <summary>ggml's encoder (Kvq.Tensors.Quant.QuantFormats, SIMD and bit-exact to quantize_row_q8_0_ref):
    /// a token's HeadDim values are HeadDim / 32 consecutive ggml blocks.</summary>
    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) =>
        Tensors.Quant.QuantFormats.Quantize(Tensors.GgmlType.Q8_0, x[..HeadDim], block.Slice(slot * _tokenBytes, _tokenBytes));

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        if (!Vector128.IsHardwareAccelerated) { DecodeBlockReference(block, count, dst); return; }
        int n = count * _groups;
        dst = dst[..(count * HeadDim)];
        ref byte src = ref MemoryMarshal.GetReference(block[..(n * GroupBytes)]);
        ref float o = ref MemoryMarshal.GetReference(dst);
        for (int b = 0; b < n; b++)
        {
            ref byte g = ref Unsafe.Add(ref src, b * GroupBytes);
            var d = Vector128.Create((float)Unsafe.ReadUnaligned<Half>(ref g));
            ref float og = ref Unsafe.Add(ref o, b * GroupValues);
            for (int h = 0; h < 2; h++)
            {
                var c = Vector128.LoadUnsafe(ref Unsafe.Add(ref g, 2 + 16 * h)).AsSByte();
                var (s0, s1) = Vector128.Widen(c);
                var (i0, i1) = Vector128.Widen(s0);
                var (i2, i3) = Vector128.Widen(s1);
                (Vector128.ConvertToSingle(i0) * d).StoreUnsafe(ref og, (nuint)(16 * h));
                (Vector128.ConvertToSingle(i1) * d).StoreUnsafe(ref og, (nuint)(16 * h + 4));
                (Vector128.ConvertToSingle(i2) * d).StoreUnsafe(ref og, (nuint)(16 * h + 8));
                (Vector128.ConvertToSingle(i3) * d).StoreUnsafe(ref og, (nuint)(16 * h + 12));
            }
        }
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        for (int b = 0; b < count * _groups; b++)
        {
            var g = block.Slice(b * GroupBytes, GroupBytes);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(g);
            for (int j = 0; j < GroupValues; j++) dst[b * GroupValues + j] = (sbyte)g[2 + j] * d;
        }
    }

    /// <summary>
    /// Fused dequant-dot: q . k_j = sum over groups of d_g * (q_g . codes_g), reading the int8 codes directly (no
    /// decoded tile). Each group's codes are widened to f32 once and reused for all nq query rows.
    /// </summary>
    public override void Scores(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        if (count == 0 || nq == 0) return;
        // Many query rows (prefill): one decode then the dense tile kernel, whose reduction is shared by four keys;
        // the fused dot reduces every (row, key) pair alone and was ~4x slower at 48 rows (bench/Kvq.Micro).
        if (nq > 4 && Vector512.IsHardwareAccelerated && HeadDim % 16 == 0) base.Scores(block, count, q, nq, scores, tile);
        else if (Vector256.IsHardwareAccelerated) ScoresV256(block, count, q, nq, scores);
        else if (Vector128.IsHardwareAccelerated) ScoresV128(block, count, q, nq, scores);
        else base.Scores(block, count, q, nq, scores, tile);
    }

    internal void ScoresV128(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores)
    {
        int hd = HeadDim;
        _ = block[count * _tokenBytes - 1];
        _ = q[nq * hd - 1];
        _ = scores[nq * count - 1];
        ref byte src = ref MemoryMarshal.GetReference(block);
        ref float q0 = ref MemoryMarshal.GetReference(q);
        ref float s0 = ref MemoryMarshal.GetReference(scores);
        for (int j = 0; j < count; j++)
        {
            for (int i = 0; i < nq; i++) Unsafe.Add(ref s0, i * count + j) = 0f;
            for (int g = 0; g < _groups; g++)
            {
                ref byte gb = ref Unsafe.Add(ref src, j * _tokenBytes + g * GroupBytes);
                float d = (float)Unsafe.ReadUnaligned<Half>(ref gb);
                var (a, b) = Vector128.Widen(Vector128.LoadUnsafe(ref Unsafe.Add(ref gb, 2)).AsSByte());
                var (c, e) = Vector128.Widen(Vector128.LoadUnsafe(ref Unsafe.Add(ref gb, 18)).AsSByte());
                var (i0, i1) = Vector128.Widen(a);
                var (i2, i3) = Vector128.Widen(b);
                var (i4, i5) = Vector128.Widen(c);
                var (i6, i7) = Vector128.Widen(e);
                var f0 = Vector128.ConvertToSingle(i0); var f1 = Vector128.ConvertToSingle(i1);
                var f2 = Vector128.ConvertToSingle(i2); var f3 = Vector128.ConvertToSingle(i3);
                var f4 = Vector128.ConvertToSingle(i4); var f5 = Vector128.ConvertToSingle(i5);
                var f6 = Vector128.ConvertToSingle(i6); var f7 = Vector128.ConvertToSingle(i7);
                for (int i = 0; i < nq; i++)
                {
                    ref float qg = ref Unsafe.Add(ref q0, i * hd + g * GroupValues);
                    var acc = f0 * Vector128.LoadUnsafe(ref qg) + f1 * Vector128.LoadUnsafe(ref qg, 4)
                            + f2 * Vector128.LoadUnsafe(ref qg, 8) + f3 * Vector128.LoadUnsafe(ref qg, 12)
                            + f4 * Vector128.LoadUnsafe(ref qg, 16) + f5 * Vector128.LoadUnsafe(ref qg, 20)
                            + f6 * Vector128.LoadUnsafe(ref qg, 24) + f7 * Vector128.LoadUnsafe(ref qg, 28);
                    Unsafe.Add(ref s0, i * count + j) += d * Vector128.Sum(acc);
                }
            }
        }
    }

    internal void ScoresV256(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores)
    {
        int hd = HeadDim;
        _ = block[count * _tokenBytes - 1];
        _ = q[nq * hd - 1];
        _ = scores[nq * count - 1];
        ref byte src = ref MemoryMarshal.GetReference(block);
        ref float q0 = ref MemoryMarshal.GetReference(q);
        ref float s0 = ref MemoryMarshal.GetReference(scores);
        for (int j = 0; j < count; j++)
        {
            for (int i = 0; i < nq; i++) Unsafe.Add(ref s0, i * count + j) = 0f;
            for (int g = 0; g < _groups; g++)
            {
                ref byte gb = ref Unsafe.Add(ref src, j * _tokenBytes + g * GroupBytes);
                float d = (float)Unsafe.ReadUnaligned<Half>(ref gb);
                var (a, b) = Vector256.Widen(Vector256.LoadUnsafe(ref Unsafe.Add(ref gb, 2)).AsSByte());
                var (i0, i1) = Vector256.Widen(a);
                var (i2, i3) = Vector256.Widen(b);
                var f0 = Vector256.ConvertToSingle(i0); var f1 = Vector256.ConvertToSingle(i1);
                var f2 = Vector256.ConvertToSingle(i2); var f3 = Vector256.ConvertToSingle(i3);
                for (int i = 0; i < nq; i++)
                {
                    ref float qg = ref Unsafe.Add(ref q0, i * hd + g * GroupValues);
                    var acc = f0 * Vector256.LoadUnsafe(ref qg) + f1 * Vector256.LoadUnsafe(ref qg, 8)
                            + f2 * Vector256.LoadUnsafe(ref qg, 16) + f3 * Vector256.LoadUnsafe(ref qg, 24);
                    Unsafe.Add(ref s0, i * count + j) += d * Vector256.Sum(acc);
                }
            }
        }
    }

    /// <summary>
    /// Per value: d/2 (rounding to the nearest code) + 127 |d - f16(d)| (the stored scale is rounded to f16) + a few
    /// f32 ulps of the group's max, with d = max|x| / 127 over the value's group of 32.
    /// </summary>
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound)
    {
        for (int b = 0; b < xs.Length / GroupValues; b++)
        {
            var x = xs.Slice(b * GroupValues, GroupValues);
            float amax = 0f;
            foreach (var v in x) amax = MathF.Max(amax, MathF.Abs(v));
            float d = amax / 127f;
            float e = d / 2 + 127 * MathF.Abs(d - (float)(Half)d) + 4e-7f * amax;
            bound.Slice(b * GroupValues, GroupValues).Fill(e);
        }
    }
}
