using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Kvq.Tensors.Quant;

// Encoders. The scalar ones follow ggml's quantize_row_*_ref operation for operation (same float expressions in the
// same order, f16 scales rounded to nearest even), so for finite inputs they produce ggml's bytes exactly; the SIMD
// ones (Q8_0, Q4_0) are tested to match the scalar ones bit for bit. NaN/inf inputs are not given any meaning.
public static unsafe partial class QuantFormats
{
    /// <summary>True for the formats <see cref="Quantize"/> can encode.</summary>
    public static bool CanQuantize(GgmlType type) => type is GgmlType.Q4_0 or GgmlType.Q4_1 or GgmlType.Q5_0
        or GgmlType.Q5_1 or GgmlType.Q8_0;

    /// <summary>
    /// Encodes <paramref name="src"/> (a multiple of 32 values) into <paramref name="dst"/>, byte-identical to ggml's
    /// reference quantizer. Q8_0 and Q4_0 use SIMD; the others the scalar reference.
    /// </summary>
    public static void Quantize(GgmlType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        if (Vector256.IsHardwareAccelerated && type is GgmlType.Q8_0 or GgmlType.Q4_0)
            QuantizeVector256(type, src, dst);
        else
            QuantizeReference(type, src, dst);
    }

    /// <summary>Scalar twin of <see cref="Quantize"/>: ggml's quantize_row_*_ref.</summary>
    public static void QuantizeReference(GgmlType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = CheckQuantizeRow(type, src.Length, dst.Length);
        fixed (float* x = src)
        fixed (byte* y = dst)
        {
            switch (type)
            {
                case GgmlType.Q4_0: QuantizeQ4_0Ref(x, y, nb); break;
                case GgmlType.Q4_1: QuantizeQ4_1Ref(x, y, nb); break;
                case GgmlType.Q5_0: QuantizeQ5_0Ref(x, y, nb); break;
                case GgmlType.Q5_1: QuantizeQ5_1Ref(x, y, nb); break;
                case GgmlType.Q8_0: QuantizeQ8_0Ref(x, y, nb); break;
            }
        }
    }

    /// <summary>The SIMD encoders (Q8_0, Q4_0), callable directly by tests.</summary>
    internal static void QuantizeVector256(GgmlType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        int nb = CheckQuantizeRow(type, src.Length, dst.Length);
        fixed (float* x = src)
        fixed (byte* y = dst)
        {
            if (type == GgmlType.Q8_0) QuantizeQ8_0V256(x, y, nb);
            else if (type == GgmlType.Q4_0) QuantizeQ4_0V256(x, y, nb);
            else throw new NotSupportedException($"{type} has no SIMD encoder");
        }
    }

    private static int CheckQuantizeRow(GgmlType type, int values, int bytes)
    {
        if (!CanQuantize(type)) throw new NotSupportedException($"no encoder for ggml type {type}");
        if (values % 32 != 0) throw new ArgumentException($"{type}: {values} values is not a multiple of the block size 32");
        int nb = values / 32;
        long need = (long)nb * GgmlTypeInfo.TypeSize(type);
        if (bytes < need) throw new ArgumentException($"{type}: {values} values need {need} bytes, the span has {bytes}");
        return nb;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreF16(byte* p, float v) => Unsafe.WriteUnaligned(p, SingleToHalf(v));

    /// <summary>
    /// f32 -> f16 bits, round to nearest even (as (Half)v and as ggml), inlined: (Half)v is an out-of-line call that
    /// spills every vector register. Normal results round with integer ops; subnormal results are aligned by adding
    /// a magic float, so the FPU's own round-to-nearest-even does the rounding. NaN becomes the quiet NaN 0x7E00.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ushort SingleToHalf(float v)
    {
        uint u = BitConverter.SingleToUInt32Bits(v);
        uint sign = (u >> 16) & 0x8000;
        u &= 0x7fffffff;
        uint h;
        if (u >= (127 + 16) << 23) // >= 65536, inf, NaN
            h = u > 0x7f800000 ? 0x7e00u : 0x7c00u;
        else if (u < (127 - 14) << 23) // below the smallest normal f16, 2^-14
        {
            const uint magic = (127 - 15 + 23 - 10 + 1) << 23; // 0.5f: its ulp is the f16 subnormal step 2^-24
            float f = BitConverter.UInt32BitsToSingle(u) + BitConverter.UInt32BitsToSingle(magic);
            h = BitConverter.SingleToUInt32Bits(f) - magic;
        }
        else
        {
            // Rebias 127 -> 15 and round the 13 dropped bits to nearest even; a carry may reach inf (>= 65520).
            uint odd = (u >> 13) & 1;
            h = (u - ((127 - 15) << 23) + 0xfff + odd) >> 13;
        }
        return (ushort)(h | sign);
    }

    // ---- scalar references ----

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeQ8_0Ref(float* x, byte* y, int nb)
    {
        for (int i = 0; i < nb; i++, x += 32, y += 34)
        {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = amax > MathF.Abs(x[j]) ? amax : MathF.Abs(x[j]); // ggml: MAX(amax, fabsf(v))
            float d = amax / 127;
            float id = d != 0 ? 1.0f / d : 0.0f;
            StoreF16(y, d);
            sbyte* qs = (sbyte*)(y + 2);
            for (int j = 0; j < 32; j++) qs[j] = (sbyte)MathF.Round(x[j] * id, MidpointRounding.AwayFromZero);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeQ4_0Ref(float* x, byte* y, int nb)
    {
        for (int i = 0; i < nb; i++, x += 32, y += 18)
        {
            // The scale comes from the value of largest magnitude, sign included (first one wins a tie), so that value
            // lands exactly on the code 0 (= -8) end.
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
            {
                if (amax < MathF.Abs(x[j]))
                {
                    amax = MathF.Abs(x[j]);
                    max = x[j];
                }
            }
            float d = max / -8;
            float id = d != 0 ? 1.0f / d : 0.0f;
            StoreF16(y, d);
            for (int j = 0; j < 16; j++)
            {
                float x0 = x[j] * id;
                float x1 = x[j + 16] * id;
                int q0 = Math.Min(15, (int)(x0 + 8.5f));
                int q1 = Math.Min(15, (int)(x1 + 8.5f));
                y[2 + j] = (byte)(q0 | (q1 << 4));
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeQ4_1Ref(float* x, byte* y, int nb)
    {
        for (int i = 0; i < nb; i++, x += 32, y += 20)
        {
            float min = float.MaxValue, max = -float.MaxValue;
            for (int j = 0; j < 32; j++)
            {
                if (x[j] < min) min = x[j];
                if (x[j] > max) max = x[j];
            }
            float d = (max - min) / 15;
            float id = d != 0 ? 1.0f / d : 0.0f;
            StoreF16(y, d);
            StoreF16(y + 2, min);
            for (int j = 0; j < 16; j++)
            {
                float x0 = (x[j] - min) * id;
                float x1 = (x[j + 16] - min) * id;
                int q0 = Math.Min(15, (int)(x0 + 0.5f));
                int q1 = Math.Min(15, (int)(x1 + 0.5f));
                y[4 + j] = (byte)(q0 | (q1 << 4));
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeQ5_0Ref(float* x, byte* y, int nb)
    {
        for (int i = 0; i < nb; i++, x += 32, y += 22)
        {
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
            {
                if (amax < MathF.Abs(x[j]))
                {
                    amax = MathF.Abs(x[j]);
                    max = x[j];
                }
            }
            float d = max / -16;
            float id = d != 0 ? 1.0f / d : 0.0f;
            StoreF16(y, d);
            uint qh = 0;
            for (int j = 0; j < 16; j++)
            {
                float x0 = x[j] * id;
                float x1 = x[j + 16] * id;
                int q0 = Math.Min(31, (int)(x0 + 16.5f));
                int q1 = Math.Min(31, (int)(x1 + 16.5f));
                y[6 + j] = (byte)((q0 & 0xF) | ((q1 & 0xF) << 4));
                qh |= (uint)((q0 & 0x10) >> 4) << j;
                qh |= (uint)((q1 & 0x10) >> 4) << (j + 16);
            }
            Unsafe.WriteUnaligned(y + 2, qh);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeQ5_1Ref(float* x, byte* y, int nb)
    {
        for (int i = 0; i < nb; i++, x += 32, y += 24)
        {
            float min = float.MaxValue, max = -float.MaxValue;
            for (int j = 0; j < 32; j++)
            {
                if (x[j] < min) min = x[j];
                if (x[j] > max) max = x[j];
            }
            float d = (max - min) / 31;
            float id = d != 0 ? 1.0f / d : 0.0f;
            StoreF16(y, d);
            StoreF16(y + 2, min);
            uint qh = 0;
            for (int j = 0; j < 16; j++)
            {
                float x0 = (x[j] - min) * id;
                float x1 = (x[j + 16] - min) * id;
                int q0 = (byte)(int)(x0 + 0.5f);
                int q1 = (byte)(int)(x1 + 0.5f);
                y[8 + j] = (byte)((q0 & 0xF) | ((q1 & 0xF) << 4));
                qh |= (uint)((q0 & 0x10) >> 4) << j;
                qh |= (uint)((q1 & 0x10) >> 4) << (j + 16);
            }
            Unsafe.WriteUnaligned(y + 4, qh);
        }
    }

    // ---- SIMD encoders: 32 values = 4 x Vector256 per block ----

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HorizontalMax(Vector256<float> v)
    {
        var m = Vector128.MaxNative(v.GetLower(), v.GetUpper());
        m = Vector128.MaxNative(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
        m = Vector128.MaxNative(m, Vector128.Shuffle(m, Vector128.Create(1, 0, 3, 2)));
        return m.ToScalar();
    }

    /// <summary>roundf: to nearest, halves away from zero. Exact: p - trunc(p) has no rounding error.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> RoundAway(Vector256<float> p)
    {
        var t = Vector256.Truncate(p);
        var half = Vector256.GreaterThanOrEqual(Vector256.Abs(p - t), Vector256.Create(0.5f));
        var step = Vector256.CopySign(Vector256<float>.One, p) & half;
        return Vector256.ConvertToInt32Native(t + step); // |values| <= 127: no saturation fix-up needed
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeQ8_0V256(float* x, byte* y, int nb)
    {
        for (int i = 0; i < nb; i++, x += 32, y += 34)
        {
            var v0 = Vector256.Load(x);
            var v1 = Vector256.Load(x + 8);
            var v2 = Vector256.Load(x + 16);
            var v3 = Vector256.Load(x + 24);
            var a = Vector256.MaxNative(Vector256.MaxNative(Vector256.Abs(v0), Vector256.Abs(v1)),
                Vector256.MaxNative(Vector256.Abs(v2), Vector256.Abs(v3)));
            float amax = HorizontalMax(a);
            float d = amax / 127;
            float id = d != 0 ? 1.0f / d : 0.0f;
            StoreF16(y, d);
            var vid = Vector256.Create(id);
            var lo = Vector256.Narrow(RoundAway(v0 * vid), RoundAway(v1 * vid));
            var hi = Vector256.Narrow(RoundAway(v2 * vid), RoundAway(v3 * vid));
            Vector256.Narrow(lo, hi).Store((sbyte*)(y + 2));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeQ4_0V256(float* x, byte* y, int nb)
    {
        for (int i = 0; i < nb; i++, x += 32, y += 18)
        {
            var v0 = Vector256.Load(x);
            var v1 = Vector256.Load(x + 8);
            var v2 = Vector256.Load(x + 16);
            var v3 = Vector256.Load(x + 24);
            var a0 = Vector256.Abs(v0);
            var a1 = Vector256.Abs(v1);
            var a2 = Vector256.Abs(v2);
            var a3 = Vector256.Abs(v3);
            float amax = HorizontalMax(Vector256.MaxNative(Vector256.MaxNative(a0, a1), Vector256.MaxNative(a2, a3)));
            float max = 0;
            if (amax > 0)
            {
                // The scalar loop keeps the first value that reaches the largest magnitude.
                var va = Vector256.Create(amax);
                uint hit = Vector256.Equals(a0, va).ExtractMostSignificantBits()
                    | Vector256.Equals(a1, va).ExtractMostSignificantBits() << 8
                    | Vector256.Equals(a2, va).ExtractMostSignificantBits() << 16
                    | Vector256.Equals(a3, va).ExtractMostSignificantBits() << 24;
                max = x[System.Numerics.BitOperations.TrailingZeroCount(hit)];
            }
            float d = max / -8;
            float id = d != 0 ? 1.0f / d : 0.0f;
            StoreF16(y, d);
            var vid = Vector256.Create(id);
            var bias = Vector256.Create(8.5f);
            var fifteen = Vector256.Create(15);
            // Multiply and add stay two roundings, as in ggml (no fused multiply-add). Values lie in [0, 17), so the
            // native truncating conversion needs no saturation fix-up.
            var q0 = Vector256.Min(Vector256.ConvertToInt32Native(v0 * vid + bias), fifteen);
            var q1 = Vector256.Min(Vector256.ConvertToInt32Native(v1 * vid + bias), fifteen);
            var q2 = Vector256.Min(Vector256.ConvertToInt32Native(v2 * vid + bias), fifteen);
            var q3 = Vector256.Min(Vector256.ConvertToInt32Native(v3 * vid + bias), fifteen);
            var packed = Vector256.Narrow(q0 | (q2 << 4), q1 | (q3 << 4)).AsUInt16(); // 16 bytes' worth in 16-bit lanes
            Vector128.Narrow(packed.GetLower(), packed.GetUpper()).Store(y + 2);
        }
    }
}
