using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kvq.Tensors.Quant;

/// <summary>Dot product of an f16 vector with an f32 vector, converting on the fly (no copy of the row).</summary>
public static unsafe class HalfDot
{
    public static float Dot(ReadOnlySpan<Half> a, ReadOnlySpan<float> x)
    {
        if (Avx512F.IsSupported && a.Length >= 16) return DotAvx512(a, x);
        if (Avx2.IsSupported && Fma.IsSupported && a.Length >= 8) return DotAvx2(a, x);
        return Reference(a, x);
    }

    /// <summary>Scalar twin, the test oracle.</summary>
    public static float Reference(ReadOnlySpan<Half> a, ReadOnlySpan<float> x)
    {
        float s = 0;
        for (int i = 0; i < x.Length; i++) s += (float)a[i] * x[i];
        return s;
    }

    // .NET exposes no vcvtph2ps intrinsic, so f16 -> f32 is done with integer ops plus one multiply
    // (exact for normals, subnormals, inf and NaN).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> F16ToF32(Vector256<ushort> h)
    {
        var w = Avx512F.ConvertToVector512UInt32(h);
        var sign = (w & Vector512.Create(0x8000u)) << 16;
        var em = w & Vector512.Create(0x7fffu);
        // Normal numbers: shift mantissa/exponent into place and rebias (112 = 127 - 15) via a float multiply
        // by 2^112, which also turns f16 subnormals into the right f32 value.
        var magic = Vector512.Create(0x77800000u).AsSingle(); // 2^112
        var f = (em << 13).AsSingle() * magic;
        // Inf/NaN: exponent all ones -> force the f32 exponent to all ones.
        var infnan = Vector512.GreaterThanOrEqual(em, Vector512.Create(0x7c00u));
        var fixedUp = f.AsUInt32() | (infnan & Vector512.Create(0x7f800000u));
        return (fixedUp | sign).AsSingle();
    }

    /// <summary>The AVX2 twin of <see cref="F16ToF32"/> for 8 values (CPUs without AVX-512): the same integer steps and
    /// multiply by 2^112, exact for every input (normals, subnormals, zeros, inf, NaN). Without it the f16 paths fell
    /// back to a software conversion per value, ~70-100x slower decode on AVX2-only machines.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> F16ToF32x8(Vector128<ushort> h)
    {
        var w = Avx2.ConvertToVector256Int32(h).AsUInt32();
        var sign = (w & Vector256.Create(0x8000u)) << 16;
        var em = w & Vector256.Create(0x7fffu);
        var f = (em << 13).AsSingle() * Vector256.Create(0x77800000u).AsSingle();
        var infnan = Vector256.GreaterThanOrEqual(em, Vector256.Create(0x7c00u));
        return (f.AsUInt32() | (infnan & Vector256.Create(0x7f800000u)) | sign).AsSingle();
    }

    /// <summary>The dot on AVX2 + FMA: two 8-lane accumulators, then the scalar tail.</summary>
    internal static float DotAvx2(ReadOnlySpan<Half> a, ReadOnlySpan<float> x)
    {
        int n = x.Length;
        fixed (Half* pa = a)
        fixed (float* px = x)
        {
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            int i = 0;
            for (; i + 16 <= n; i += 16)
            {
                acc0 = Fma.MultiplyAdd(F16ToF32x8(Vector128.Load((ushort*)pa + i)), Vector256.Load(px + i), acc0);
                acc1 = Fma.MultiplyAdd(F16ToF32x8(Vector128.Load((ushort*)pa + i + 8)), Vector256.Load(px + i + 8), acc1);
            }
            for (; i + 8 <= n; i += 8)
                acc0 = Fma.MultiplyAdd(F16ToF32x8(Vector128.Load((ushort*)pa + i)), Vector256.Load(px + i), acc0);
            float s = Vector256.Sum(acc0 + acc1);
            for (; i < n; i++) s += (float)pa[i] * px[i];
            return s;
        }
    }

    /// <summary>
    /// f16 -> f32 for values known to be finite (no inf/NaN bit pattern): sign-extend, shift the sign, exponent and
    /// mantissa into place, clear the three copies of the sign that land in the f32 exponent, and rebias with the
    /// same multiply by 2^112 as <see cref="F16ToF32"/> (exact for normals, subnormals and zeros). 4 instructions
    /// (the load folds into vpmovsxwd) instead of ~9, and bitwise the same floats as <see cref="F16ToF32"/> on every
    /// finite input; an inf or NaN would come out as a finite +-2^16 x (1 + m/1024), so callers check first
    /// (<see cref="AllFinite"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> F16ToF32Finite(Half* p)
    {
        var w = Avx512F.ConvertToVector512Int32(Vector256.Load((short*)p));
        var f = (w << 13) & Vector512.Create(unchecked((int)0x8FFFE000));
        return f.AsSingle() * Vector512.Create(0x77800000u).AsSingle();
    }

    /// <summary>Whether no value is an inf or NaN (exponent bits all ones): then <see cref="F16ToF32Finite"/> is exact.</summary>
    public static bool AllFinite(ReadOnlySpan<Half> a)
    {
        int n = a.Length, i = 0;
        fixed (Half* p = a)
        {
            if (Vector256.IsHardwareAccelerated)
            {
                var exp = Vector256.Create((ushort)0x7c00);
                var any = Vector256<ushort>.Zero;
                for (; i + 16 <= n; i += 16)
                    any |= Vector256.Equals(Vector256.Load((ushort*)p + i) & exp, exp);
                if (any != Vector256<ushort>.Zero) return false;
            }
            for (; i < n; i++)
                if ((((ushort*)p)[i] & 0x7c00) == 0x7c00) return false;
        }
        return true;
    }

    /// <summary>
    /// y[r] = Dot(row r, x) for <paramref name="rows"/> f16 rows of <paramref name="k"/> values,
    /// <paramref name="rowStride"/> bytes apart, all finite (<see cref="AllFinite"/>): each result bitwise what
    /// <see cref="Dot"/> gives (same two accumulators, same order, same reduction; the conversion is exact either
    /// way), with the cheaper <see cref="F16ToF32Finite"/>. Rows go one after another: four rows per pass (sharing
    /// the activation loads) ran 2x faster hot in L2 but 2-4x slower streaming a model's weights from memory, as
    /// four interleaved streams defeat the hardware prefetcher that a single forward stream keeps busy.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DotRowsFinite(byte* w, long rowStride, int rows, int k, float* x, float* y)
    {
        if (!Avx512F.IsSupported || k < 16)
        {
            for (int r = 0; r < rows; r++) y[r] = Dot(new ReadOnlySpan<Half>(w + r * rowStride, k), new ReadOnlySpan<float>(x, k));
            return;
        }
        for (int row = 0; row < rows; row++)
        {
            Half* p = (Half*)(w + row * rowStride);
            Vector512<float> acc0 = default, acc1 = default;
            int i = 0;
            for (; i + 32 <= k; i += 32)
            {
                acc0 = Avx512F.FusedMultiplyAdd(F16ToF32Finite(p + i), Vector512.Load(x + i), acc0);
                acc1 = Avx512F.FusedMultiplyAdd(F16ToF32Finite(p + i + 16), Vector512.Load(x + i + 16), acc1);
            }
            for (; i + 16 <= k; i += 16)
                acc0 = Avx512F.FusedMultiplyAdd(F16ToF32Finite(p + i), Vector512.Load(x + i), acc0);
            float s = Vector512.Sum(acc0 + acc1);
            for (; i < k; i++) s += (float)p[i] * x[i];
            y[row] = s;
        }
    }

    /// <summary>f16 -> f32 for a span. TensorPrimitives.ConvertToSingle(Half) measured ~1 ns/value here (it is not
    /// vectorised for Half on this runtime), which made the f16 KV cache slower than f32; this runs at memory speed.
    /// <paramref name="finite"/>: the caller knows no value is inf or NaN (<see cref="AllFinite"/>), which allows the
    /// 4-instruction widening (<see cref="F16ToF32Finite"/>); the floats are the same either way.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ToSingle(ReadOnlySpan<Half> src, Span<float> dst, bool finite = false)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        int n = src.Length, i = 0;
        fixed (Half* ps = src)
        fixed (float* pd = dst)
        {
            if (Avx512F.IsSupported && finite)
                for (; i + 16 <= n; i += 16)
                    F16ToF32Finite(ps + i).Store(pd + i);
            else if (Avx512F.IsSupported)
                for (; i + 16 <= n; i += 16)
                    F16ToF32(Vector256.Load((ushort*)ps + i)).Store(pd + i);
            else if (Avx2.IsSupported)
                for (; i + 8 <= n; i += 8)
                    F16ToF32x8(Vector128.Load((ushort*)ps + i)).Store(pd + i);
            for (; i < n; i++) pd[i] = (float)ps[i];
        }
    }

    /// <summary>
    /// <c>y[t] = Dot(a, x[t])</c> for <paramref name="n"/> vectors x stored <paramref name="xStride"/> floats apart,
    /// results <paramref name="yStride"/> floats apart. Each result is bitwise what <see cref="Dot"/> gives for that
    /// vector alone (same accumulators, same order), so a batch of sequences decodes exactly as each would alone;
    /// the row is converted from f16 once per four vectors instead of once per vector.
    /// </summary>
    public static void DotMany(ReadOnlySpan<Half> a, float* x, int xStride, int n, float* y, int yStride)
    {
        int t = 0;
        if (Avx512F.IsSupported && a.Length >= 16)
        {
            for (; t + 8 <= n; t += 8) Dot8Avx512(a, x + (long)t * xStride, xStride, y + (long)t * yStride, yStride);
            for (; t + 4 <= n; t += 4) Dot4Avx512(a, x + (long)t * xStride, xStride, y + (long)t * yStride, yStride);
        }
        for (; t < n; t++) y[(long)t * yStride] = Dot(a, new ReadOnlySpan<float>(x + (long)t * xStride, a.Length));
    }

    /// <summary>Eight <see cref="DotAvx512"/>s sharing each converted chunk of the row (16 accumulators + 2 weight
    /// registers of the 32: the f16 conversion, ~9 instructions per 16 weights, is paid once per 8 vectors).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot8Avx512(ReadOnlySpan<Half> a, float* x, int xStride, float* y, int yStride)
    {
        int n = a.Length;
        fixed (Half* pa = a)
        {
            Vector512<float> a00 = default, a01 = default, a10 = default, a11 = default, a20 = default, a21 = default;
            Vector512<float> a30 = default, a31 = default, a40 = default, a41 = default, a50 = default, a51 = default;
            Vector512<float> a60 = default, a61 = default, a70 = default, a71 = default;
            float* x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
            float* x4 = x + 4 * xStride, x5 = x + 5 * xStride, x6 = x + 6 * xStride, x7 = x + 7 * xStride;
            int i = 0;
            for (; i + 32 <= n; i += 32)
            {
                var w0 = F16ToF32(Vector256.Load((ushort*)pa + i));
                var w1 = F16ToF32(Vector256.Load((ushort*)pa + i + 16));
                a00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x0 + i), a00); a01 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x0 + i + 16), a01);
                a10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x1 + i), a10); a11 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x1 + i + 16), a11);
                a20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x2 + i), a20); a21 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x2 + i + 16), a21);
                a30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x3 + i), a30); a31 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x3 + i + 16), a31);
                a40 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x4 + i), a40); a41 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x4 + i + 16), a41);
                a50 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x5 + i), a50); a51 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x5 + i + 16), a51);
                a60 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x6 + i), a60); a61 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x6 + i + 16), a61);
                a70 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x7 + i), a70); a71 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x7 + i + 16), a71);
            }
            for (; i + 16 <= n; i += 16)
            {
                var w0 = F16ToF32(Vector256.Load((ushort*)pa + i));
                a00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x0 + i), a00);
                a10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x1 + i), a10);
                a20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x2 + i), a20);
                a30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x3 + i), a30);
                a40 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x4 + i), a40);
                a50 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x5 + i), a50);
                a60 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x6 + i), a60);
                a70 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x7 + i), a70);
            }
            float s0 = Vector512.Sum(a00 + a01), s1 = Vector512.Sum(a10 + a11), s2 = Vector512.Sum(a20 + a21), s3 = Vector512.Sum(a30 + a31);
            float s4 = Vector512.Sum(a40 + a41), s5 = Vector512.Sum(a50 + a51), s6 = Vector512.Sum(a60 + a61), s7 = Vector512.Sum(a70 + a71);
            for (; i < n; i++)
            {
                float w = (float)pa[i];
                s0 += w * x0[i]; s1 += w * x1[i]; s2 += w * x2[i]; s3 += w * x3[i];
                s4 += w * x4[i]; s5 += w * x5[i]; s6 += w * x6[i]; s7 += w * x7[i];
            }
            y[0] = s0; y[yStride] = s1; y[2L * yStride] = s2; y[3L * yStride] = s3;
            y[4L * yStride] = s4; y[5L * yStride] = s5; y[6L * yStride] = s6; y[7L * yStride] = s7;
        }
    }

    /// <summary>Four <see cref="DotAvx512"/>s sharing each converted chunk of the row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot4Avx512(ReadOnlySpan<Half> a, float* x, int xStride, float* y, int yStride)
    {
        int n = a.Length;
        float* x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride;
        fixed (Half* pa = a)
        {
            Vector512<float> a00 = default, a01 = default, a10 = default, a11 = default;
            Vector512<float> a20 = default, a21 = default, a30 = default, a31 = default;
            int i = 0;
            for (; i + 32 <= n; i += 32)
            {
                var w0 = F16ToF32(Vector256.Load((ushort*)pa + i));
                var w1 = F16ToF32(Vector256.Load((ushort*)pa + i + 16));
                a00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x0 + i), a00);
                a01 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x0 + i + 16), a01);
                a10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x1 + i), a10);
                a11 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x1 + i + 16), a11);
                a20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x2 + i), a20);
                a21 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x2 + i + 16), a21);
                a30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x3 + i), a30);
                a31 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(x3 + i + 16), a31);
            }
            for (; i + 16 <= n; i += 16)
            {
                var w0 = F16ToF32(Vector256.Load((ushort*)pa + i));
                a00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x0 + i), a00);
                a10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x1 + i), a10);
                a20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x2 + i), a20);
                a30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(x3 + i), a30);
            }
            float s0 = Vector512.Sum(a00 + a01), s1 = Vector512.Sum(a10 + a11);
            float s2 = Vector512.Sum(a20 + a21), s3 = Vector512.Sum(a30 + a31);
            for (; i < n; i++)
            {
                float w = (float)pa[i];
                s0 += w * x0[i]; s1 += w * x1[i]; s2 += w * x2[i]; s3 += w * x3[i];
            }
            y[0] = s0; y[yStride] = s1; y[2L * yStride] = s2; y[3L * yStride] = s3;
        }
    }

    // Fully optimised from the first call: at tier 0 every vector intrinsic is a call and this runs ~25x slower.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotAvx512(ReadOnlySpan<Half> a, ReadOnlySpan<float> x)
    {
        int n = x.Length;
        fixed (Half* pa = a)
        fixed (float* px = x)
        {
            var acc0 = Vector512<float>.Zero;
            var acc1 = Vector512<float>.Zero;
            int i = 0;
            for (; i + 32 <= n; i += 32)
            {
                acc0 = Avx512F.FusedMultiplyAdd(F16ToF32(Vector256.Load((ushort*)pa + i)), Vector512.Load(px + i), acc0);
                acc1 = Avx512F.FusedMultiplyAdd(F16ToF32(Vector256.Load((ushort*)pa + i + 16)), Vector512.Load(px + i + 16), acc1);
            }
            for (; i + 16 <= n; i += 16)
                acc0 = Avx512F.FusedMultiplyAdd(F16ToF32(Vector256.Load((ushort*)pa + i)), Vector512.Load(px + i), acc0);
            float s = Vector512.Sum(acc0 + acc1);
            for (; i < n; i++) s += (float)pa[i] * px[i];
            return s;
        }
    }
}
