using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kvq.Tensors.Quant;

/// <summary>
/// f16 weight rows against many activation vectors, each result bitwise equal to <see cref="HalfDot.Dot"/> of that
/// row and vector (same accumulators, same order; the f16 -> f32 conversion is exact, so converting a row once ahead
/// changes nothing). Two rows meet four vectors per pass (16 accumulators), so each activation chunk is loaded once for
/// two rows and each converted weight chunk once for four vectors: about half the instructions of
/// <see cref="HalfDot.DotMany"/> per product. Used by <see cref="WeightMatrix.MatVecRows"/> for the serving engine's
/// decode rows.
/// </summary>
public static unsafe class HalfRowBlock
{
    /// <summary>Whether <see cref="Rows"/> runs here (else callers use <see cref="HalfDot.DotMany"/>).</summary>
    public static bool Supported(int k) => Avx512F.IsSupported && k >= 16;

    /// <summary>y[t * yStride + r] = row r (of <paramref name="rows"/>, <paramref name="k"/> halves each, rows
    /// <paramref name="rowStride"/> bytes apart) . x[t] for t in [0, n); <paramref name="scratch"/> holds 2 * k floats;
    /// <paramref name="finite"/>: no row holds an inf or NaN (<see cref="HalfDot.AllFinite"/>).</summary>
    public static void Rows(byte* w, long rowStride, int rows, int k, float* x, int n, float* y, int yStride, Span<float> scratch,
        bool finite = false)
    {
        fixed (float* buf = scratch)
        {
            float* f0 = buf, f1 = buf + k;
            int r = 0;
            for (; r + 2 <= rows; r += 2)
            {
                // Finite rows (the matrix was scanned) widen with the cheaper exact conversion: the same floats.
                if (finite)
                {
                    HalfDot.ToSingle(new ReadOnlySpan<Half>(w + r * rowStride, k), new Span<float>(f0, k), finite: true);
                    HalfDot.ToSingle(new ReadOnlySpan<Half>(w + (r + 1) * rowStride, k), new Span<float>(f1, k), finite: true);
                }
                else
                {
                    HalfDot.ToSingle(new ReadOnlySpan<Half>(w + r * rowStride, k), new Span<float>(f0, k));
                    HalfDot.ToSingle(new ReadOnlySpan<Half>(w + (r + 1) * rowStride, k), new Span<float>(f1, k));
                }
                int t = 0;
                for (; t + 4 <= n; t += 4) Dot2x4(f0, f1, k, x + (long)t * k, y + (long)t * yStride + r, yStride);
                for (; t < n; t++)
                {
                    y[(long)t * yStride + r] = Dot1(f0, x + (long)t * k, k);
                    y[(long)t * yStride + r + 1] = Dot1(f1, x + (long)t * k, k);
                }
            }
            if (r < rows)
                HalfDot.DotMany(new ReadOnlySpan<Half>(w + r * rowStride, k), x, k, n, y + r, yStride);
        }
    }

    /// <summary><see cref="HalfDot"/>'s AVX-512 dot on an already converted row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot1(float* w, float* x, int n)
    {
        var acc0 = Vector512<float>.Zero;
        var acc1 = Vector512<float>.Zero;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            acc0 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), acc0);
            acc1 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i + 16), Vector512.Load(x + i + 16), acc1);
        }
        for (; i + 16 <= n; i += 16) acc0 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), acc0);
        float s = Vector512.Sum(acc0 + acc1);
        for (; i < n; i++) s += w[i] * x[i];
        return s;
    }

    /// <summary>Two rows x four vectors (x rows k floats apart); results to y[t * yStride + {0, 1}].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dot2x4(float* w0, float* w1, int n, float* x, float* y, int yStride)
    {
        float* x0 = x, x1 = x + n, x2 = x + 2 * n, x3 = x + 3 * n;
        Vector512<float> p00 = default, p01 = default, p10 = default, p11 = default, p20 = default, p21 = default, p30 = default, p31 = default;
        Vector512<float> q00 = default, q01 = default, q10 = default, q11 = default, q20 = default, q21 = default, q30 = default, q31 = default;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            var a0 = Vector512.Load(w0 + i); var a1 = Vector512.Load(w0 + i + 16);
            var b0 = Vector512.Load(w1 + i); var b1 = Vector512.Load(w1 + i + 16);
            var v0 = Vector512.Load(x0 + i); var v1 = Vector512.Load(x0 + i + 16);
            p00 = Avx512F.FusedMultiplyAdd(a0, v0, p00); p01 = Avx512F.FusedMultiplyAdd(a1, v1, p01);
            q00 = Avx512F.FusedMultiplyAdd(b0, v0, q00); q01 = Avx512F.FusedMultiplyAdd(b1, v1, q01);
            v0 = Vector512.Load(x1 + i); v1 = Vector512.Load(x1 + i + 16);
            p10 = Avx512F.FusedMultiplyAdd(a0, v0, p10); p11 = Avx512F.FusedMultiplyAdd(a1, v1, p11);
            q10 = Avx512F.FusedMultiplyAdd(b0, v0, q10); q11 = Avx512F.FusedMultiplyAdd(b1, v1, q11);
            v0 = Vector512.Load(x2 + i); v1 = Vector512.Load(x2 + i + 16);
            p20 = Avx512F.FusedMultiplyAdd(a0, v0, p20); p21 = Avx512F.FusedMultiplyAdd(a1, v1, p21);
            q20 = Avx512F.FusedMultiplyAdd(b0, v0, q20); q21 = Avx512F.FusedMultiplyAdd(b1, v1, q21);
            v0 = Vector512.Load(x3 + i); v1 = Vector512.Load(x3 + i + 16);
            p30 = Avx512F.FusedMultiplyAdd(a0, v0, p30); p31 = Avx512F.FusedMultiplyAdd(a1, v1, p31);
            q30 = Avx512F.FusedMultiplyAdd(b0, v0, q30); q31 = Avx512F.FusedMultiplyAdd(b1, v1, q31);
        }
        for (; i + 16 <= n; i += 16)
        {
            var a0 = Vector512.Load(w0 + i);
            var b0 = Vector512.Load(w1 + i);
            var v0 = Vector512.Load(x0 + i);
            p00 = Avx512F.FusedMultiplyAdd(a0, v0, p00); q00 = Avx512F.FusedMultiplyAdd(b0, v0, q00);
            v0 = Vector512.Load(x1 + i);
            p10 = Avx512F.FusedMultiplyAdd(a0, v0, p10); q10 = Avx512F.FusedMultiplyAdd(b0, v0, q10);
            v0 = Vector512.Load(x2 + i);
            p20 = Avx512F.FusedMultiplyAdd(a0, v0, p20); q20 = Avx512F.FusedMultiplyAdd(b0, v0, q20);
            v0 = Vector512.Load(x3 + i);
            p30 = Avx512F.FusedMultiplyAdd(a0, v0, p30); q30 = Avx512F.FusedMultiplyAdd(b0, v0, q30);
        }
        float s0 = Vector512.Sum(p00 + p01), s1 = Vector512.Sum(p10 + p11), s2 = Vector512.Sum(p20 + p21), s3 = Vector512.Sum(p30 + p31);
        float u0 = Vector512.Sum(q00 + q01), u1 = Vector512.Sum(q10 + q11), u2 = Vector512.Sum(q20 + q21), u3 = Vector512.Sum(q30 + q31);
        for (; i < n; i++)
        {
            float a = w0[i], b = w1[i];
            s0 += a * x0[i]; s1 += a * x1[i]; s2 += a * x2[i]; s3 += a * x3[i];
            u0 += b * x0[i]; u1 += b * x1[i]; u2 += b * x2[i]; u3 += b * x3[i];
        }
        y[0] = s0; y[yStride] = s1; y[2L * yStride] = s2; y[3L * yStride] = s3;
        y[1] = u0; y[yStride + 1] = u1; y[2L * yStride + 1] = u2; y[3L * yStride + 1] = u3;
    }
}
