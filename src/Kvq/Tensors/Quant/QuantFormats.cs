using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Kvq.Tensors.Quant;

/// <summary>
/// ggml block-quantized formats, byte-compatible with ggml/GGUF: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (32 values per
/// block), the K-quants Q4_K, Q5_K, Q6_K (256-value super-blocks) and the non-linear 4-bit IQ4_NL (32) and IQ4_XS
/// (256), see QuantFormats.Iq4.cs.
/// <list type="bullet">
/// <item><see cref="Dequantize"/> is the scalar reference, written to follow ggml's dequantize_row_* step by step; it is
/// the oracle for everything else.</item>
/// <item><see cref="Dot"/> is the fused dot product with an f32 vector: one generic kernel per format, specialised for
/// AVX-512 and AVX2 (see <see cref="IQuantLanes{TV}"/>), decoding in registers; no allocation, no per-element
/// dispatch, no materialised row.</item>
/// <item><see cref="Quantize"/> encodes f32 values exactly as ggml's quantize_row_*_ref (round to nearest), SIMD for
/// Q8_0 and Q4_0 (the KV-cache formats), scalar for Q4_1, Q5_0, Q5_1.</item>
/// </list>
/// All spans are rows: the value count must be a multiple of the block size and the byte span must hold
/// <see cref="GgmlTypeInfo.RowBytes"/> of that count.
/// </summary>
public static unsafe partial class QuantFormats
{
    /// <summary>True for the block formats this class decodes (and dots with a fused kernel).</summary>
    public static bool HasFusedDot(GgmlType type) => type is GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0
        or GgmlType.Q5_1 or GgmlType.Q8_0 or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.IQ4_NL
        or GgmlType.IQ4_XS;

    /// <summary>Which SIMD width <see cref="Dot"/> uses on this machine (for logs and benchmarks).</summary>
    public static string DotKernel => Avx512QuantLanes.IsSupported ? "avx512" : Avx2QuantLanes.IsSupported ? "avx2" : "scalar";

    /// <summary>Decodes <paramref name="dst"/>.Length values from <paramref name="src"/> (scalar reference).</summary>
    public static void Dequantize(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = CheckRow(type, src.Length, dst.Length);
        fixed (byte* s = src)
        fixed (float* y = dst)
        {
            switch (type)
            {
                case GgmlType.Q4_0: DequantizeQ4_0(s, y, nb); break;
                case GgmlType.Q4_1: DequantizeQ4_1(s, y, nb); break;
                case GgmlType.Q5_0: DequantizeQ5_0(s, y, nb); break;
                case GgmlType.Q5_1: DequantizeQ5_1(s, y, nb); break;
                case GgmlType.Q8_0: DequantizeQ8_0(s, y, nb); break;
                case GgmlType.Q4_K: DequantizeQ4_K(s, y, nb); break;
                case GgmlType.Q5_K: DequantizeQ5_K(s, y, nb); break;
                case GgmlType.Q6_K: DequantizeQ6_K(s, y, nb); break;
                case GgmlType.IQ4_NL: DequantizeIq4Nl(s, y, nb); break;
                case GgmlType.IQ4_XS: DequantizeIq4Xs(s, y, nb); break;
                default: throw Unsupported(type);
            }
        }
    }

    /// <summary>
    /// Σ row[i] · x[i] over the <paramref name="x"/>.Length values encoded in <paramref name="src"/>, on the widest SIMD
    /// the machine has. Sums in a different order than <see cref="Dequantize"/> + dot, so agrees with it to float
    /// rounding, not bit for bit.
    /// </summary>
    public static float Dot(GgmlType type, ReadOnlySpan<byte> src, ReadOnlySpan<float> x)
    {
        if (Avx512QuantLanes.IsSupported) return DotSimd<Vector512<float>, Avx512QuantLanes>(type, src, x);
        if (Avx2QuantLanes.IsSupported) return DotSimd<Vector256<float>, Avx2QuantLanes>(type, src, x);
        return DotScalar(type, src, x);
    }

    /// <summary>Portable fallback: decode a block at a time onto the stack and dot it.</summary>
    internal static float DotScalar(GgmlType type, ReadOnlySpan<byte> src, ReadOnlySpan<float> x)
    {
        int nb = CheckRow(type, src.Length, x.Length);
        int bs = GgmlTypeInfo.BlockSize(type), ts = GgmlTypeInfo.TypeSize(type);
        Span<float> buf = stackalloc float[256];
        buf = buf[..bs];
        float sum = 0;
        for (int i = 0; i < nb; i++)
        {
            Dequantize(type, src.Slice(i * ts, ts), buf);
            sum += TensorPrimitives.Dot(buf, x.Slice(i * bs, bs));
        }
        return sum;
    }

    /// <summary>The fused kernels at one SIMD width (tests call each width directly).</summary>
    internal static float DotSimd<TV, TL>(GgmlType type, ReadOnlySpan<byte> src, ReadOnlySpan<float> x)
        where TV : struct where TL : IQuantLanes<TV>
    {
        int nb = CheckRow(type, src.Length, x.Length);
        fixed (byte* s = src)
        fixed (float* px = x)
        {
            return type switch
            {
                GgmlType.Q4_0 => DotQ4_0<TV, TL>(s, px, nb),
                GgmlType.Q4_1 => DotQ4_1<TV, TL>(s, px, nb),
                GgmlType.Q5_0 => DotQ5_0<TV, TL>(s, px, nb),
                GgmlType.Q5_1 => DotQ5_1<TV, TL>(s, px, nb),
                GgmlType.Q8_0 => DotQ8_0<TV, TL>(s, px, nb),
                GgmlType.Q4_K => DotQ4_K<TV, TL>(s, px, nb),
                GgmlType.Q5_K => DotQ5_K<TV, TL>(s, px, nb),
                GgmlType.Q6_K => DotQ6_K<TV, TL>(s, px, nb),
                GgmlType.IQ4_NL => DotIq4Nl<TV, TL>(s, px, nb),
                GgmlType.IQ4_XS => DotIq4Xs<TV, TL>(s, px, nb),
                _ => throw Unsupported(type),
            };
        }
    }

    /// <summary>Validates a row of <paramref name="values"/> values over <paramref name="bytes"/> bytes; returns the block count.</summary>
    private static int CheckRow(GgmlType type, int bytes, int values)
    {
        if (!HasFusedDot(type)) throw Unsupported(type);
        int bs = GgmlTypeInfo.BlockSize(type);
        if (values % bs != 0)
            throw new ArgumentException($"{type}: {values} values is not a multiple of the block size {bs}");
        int nb = values / bs;
        long need = (long)nb * GgmlTypeInfo.TypeSize(type);
        if (bytes < need)
            throw new ArgumentException($"{type}: {values} values need {need} bytes, the span has {bytes}");
        return nb;
    }

    private static NotSupportedException Unsupported(GgmlType type) =>
        new($"ggml type {type} ({(uint)type}) is not a block format QuantFormats implements");

    /// <summary>The f16 at <paramref name="p"/> as f32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float F16(byte* p) => HalfToSingle(Unsafe.ReadUnaligned<ushort>(p));

    /// <summary>
    /// Exact f16 -> f32, inlined. (float)Half is an out-of-line call, and on SysV x64 every call spills all vector
    /// registers, which cost the 32-value formats half their speed. Normal numbers rebias the exponent with integer
    /// ops; subnormals (common for K-quant super-block scales) go through int -> float times 2^-24, so no arithmetic
    /// ever sees an f32 denormal (which would take a microcode assist).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float HalfToSingle(ushort h)
    {
        uint em = h & 0x7fffu;
        uint sign = (uint)(h & 0x8000) << 16;
        uint bits = (em << 13) + ((127 - 15) << 23);
        if (em >= 0x7c00) bits += (128 - 16) << 23; // inf/NaN: exponent all ones, payload kept
        if (em < 0x400) bits = BitConverter.SingleToUInt32Bits((int)em * (1.0f / (1 << 24))); // zero, subnormals
        return BitConverter.UInt32BitsToSingle(bits | sign);
    }

    /// <summary>
    /// ggml's get_scale_min_k4: the 6-bit scale and min of sub-block <paramref name="j"/> (0..7) from the 12 packed
    /// bytes of a Q4_K/Q5_K super-block. Sub-blocks 0-3 keep theirs in the low 6 bits of bytes j and j+4; 4-7 keep the
    /// low 4 bits in byte j+4 and the top 2 bits in the spare high bits of bytes j-4 (scale) and j (min).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleMinK4(int j, byte* q, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = q[j] & 63;
            min = q[j + 4] & 63;
        }
        else
        {
            scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }

    // ---- scalar reference decoders (block layouts in the comments, offsets in bytes) ----

    // Q4_0, 18 bytes: d f16 @0, qs[16] @2. Value j (0..15) = (qs[j] & 15) - 8, value j+16 = (qs[j] >> 4) - 8; times d.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeQ4_0(byte* s, float* y, int nb)
    {
        for (int i = 0; i < nb; i++, s += 18, y += 32)
        {
            float d = F16(s);
            byte* qs = s + 2;
            for (int j = 0; j < 16; j++)
            {
                y[j] = ((qs[j] & 0xF) - 8) * d;
                y[j + 16] = ((qs[j] >> 4) - 8) * d;
            }
        }
    }

    // Q4_1, 20 bytes: d f16 @0, m f16 @2, qs[16] @4. Value = q * d + m, q unsigned 0..15, nibble order as Q4_0.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeQ4_1(byte* s, float* y, int nb)
    {
        for (int i = 0; i < nb; i++, s += 20, y += 32)
        {
            float d = F16(s), m = F16(s + 2);
            byte* qs = s + 4;
            for (int j = 0; j < 16; j++)
            {
                y[j] = (qs[j] & 0xF) * d + m;
                y[j + 16] = (qs[j] >> 4) * d + m;
            }
        }
    }

    // Q5_0, 22 bytes: d f16 @0, qh u32 @2 (bit j = 5th bit of value j), qs[16] @6. Value = (q5 - 16) * d.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeQ5_0(byte* s, float* y, int nb)
    {
        for (int i = 0; i < nb; i++, s += 22, y += 32)
        {
            float d = F16(s);
            uint qh = Unsafe.ReadUnaligned<uint>(s + 2);
            byte* qs = s + 6;
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)((qh >> j) << 4) & 0x10;
                int h1 = (int)(qh >> (j + 12)) & 0x10;
                y[j] = (((qs[j] & 0xF) | h0) - 16) * d;
                y[j + 16] = (((qs[j] >> 4) | h1) - 16) * d;
            }
        }
    }

    // Q5_1, 24 bytes: d f16 @0, m f16 @2, qh u32 @4, qs[16] @8. Value = q5 * d + m.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeQ5_1(byte* s, float* y, int nb)
    {
        for (int i = 0; i < nb; i++, s += 24, y += 32)
        {
            float d = F16(s), m = F16(s + 2);
            uint qh = Unsafe.ReadUnaligned<uint>(s + 4);
            byte* qs = s + 8;
            for (int j = 0; j < 16; j++)
            {
                int h0 = (int)((qh >> j) << 4) & 0x10;
                int h1 = (int)(qh >> (j + 12)) & 0x10;
                y[j] = ((qs[j] & 0xF) | h0) * d + m;
                y[j + 16] = ((qs[j] >> 4) | h1) * d + m;
            }
        }
    }

    // Q8_0, 34 bytes: d f16 @0, qs[32] int8 @2. Value = q * d.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeQ8_0(byte* s, float* y, int nb)
    {
        for (int i = 0; i < nb; i++, s += 34, y += 32)
        {
            float d = F16(s);
            sbyte* qs = (sbyte*)(s + 2);
            for (int j = 0; j < 32; j++) y[j] = qs[j] * d;
        }
    }

    // Q4_K, 144 bytes: d f16 @0, dmin f16 @2, scales[12] @4 (8 x 6-bit scale + 6-bit min), qs[128] @16.
    // 4 chunks of 64 values: chunk c reads qs[32c .. 32c+32); low nibbles are sub-block 2c, high nibbles 2c+1.
    // Value = d * scale_j * q - dmin * min_j.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeQ4_K(byte* s, float* y, int nb)
    {
        for (int i = 0; i < nb; i++, s += 144)
        {
            float d = F16(s), dmin = F16(s + 2);
            byte* scales = s + 4;
            byte* q = s + 16;
            for (int c = 0; c < 4; c++, q += 32)
            {
                ScaleMinK4(2 * c, scales, out int sc1, out int m1);
                ScaleMinK4(2 * c + 1, scales, out int sc2, out int m2);
                float d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2;
                for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - min1;
                for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - min2;
            }
        }
    }

    // Q5_K, 176 bytes: d f16 @0, dmin f16 @2, scales[12] @4, qh[32] @16, qs[128] @48. As Q4_K; the 5th bit of value
    // l of chunk c is bit 2c (low nibbles) or 2c+1 (high nibbles) of qh[l].
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeQ5_K(byte* s, float* y, int nb)
    {
        for (int i = 0; i < nb; i++, s += 176)
        {
            float d = F16(s), dmin = F16(s + 2);
            byte* scales = s + 4;
            byte* qh = s + 16;
            byte* ql = s + 48;
            for (int c = 0; c < 4; c++, ql += 32)
            {
                ScaleMinK4(2 * c, scales, out int sc1, out int m1);
                ScaleMinK4(2 * c + 1, scales, out int sc2, out int m2);
                float d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2;
                int u1 = 1 << (2 * c), u2 = 2 << (2 * c);
                for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xF) + ((qh[l] & u1) != 0 ? 16 : 0)) - min1;
                for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + ((qh[l] & u2) != 0 ? 16 : 0)) - min2;
            }
        }
    }

    // Q6_K, 210 bytes: ql[128] @0 (low 4 bits), qh[64] @128 (high 2 bits), scales[16] int8 @192, d f16 @208.
    // Two halves of 128 values; half n uses ql[64n..], qh[32n..], scales[8n..]. For l in 0..31:
    // value l, l+32, l+64, l+96 = low(ql[l]), low(ql[l+32]), high(ql[l]), high(ql[l+32]) with qh[l] bits 0-1, 2-3,
    // 4-5, 6-7 on top, minus 32; 16 values share one scale: value v of the half uses scales[v / 16].
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeQ6_K(byte* s, float* y, int nb)
    {
        for (int i = 0; i < nb; i++, s += 210)
        {
            float d = F16(s + 208);
            byte* ql = s;
            byte* qh = s + 128;
            sbyte* sc = (sbyte*)(s + 192);
            for (int n = 0; n < 2; n++, y += 128, ql += 64, qh += 32, sc += 8)
            {
                for (int l = 0; l < 32; l++)
                {
                    int g = l / 16;
                    int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * sc[g] * q1;
                    y[l + 32] = d * sc[g + 2] * q2;
                    y[l + 64] = d * sc[g + 4] * q3;
                    y[l + 96] = d * sc[g + 6] * q4;
                }
            }
        }
    }
}
