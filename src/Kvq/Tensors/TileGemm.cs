using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Kvq.Tensors;

/// <summary>
/// Y[t, r] = A[r, :] . X[t, :] for a panel of 4 f32 weight rows and n tokens, with 4 rows x 4 tokens held in 16
/// vector accumulators so each loaded vector feeds 4 FMAs (the batched-prefill inner loop).
/// </summary>
public static unsafe class TileGemm
{
    /// <param name="a">(rows, k) row-major f32 panel, rows in 1..4.</param>
    /// <param name="x">(n, k) row-major.</param>
    /// <param name="y">output with row stride <paramref name="yStride"/>: y[t * yStride + r].</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Panel(float* a, int rows, int k, float* x, int n, float* y, int yStride)
    {
        int t = 0;
        if (rows == 4 && Vector512.IsHardwareAccelerated && k % 16 == 0)
            for (; t + 4 <= n; t += 4) Kernel4x4(a, k, x + (long)t * k, y + (long)t * yStride, yStride);
        for (; t < n; t++)
            for (int r = 0; r < rows; r++)
                y[(long)t * yStride + r] = Dot(a + (long)r * k, x + (long)t * k, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(float* p, float* q, int k) =>
        System.Numerics.Tensors.TensorPrimitives.Dot(new ReadOnlySpan<float>(p, k), new ReadOnlySpan<float>(q, k));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel4x4(float* a, int k, float* x, float* y, int yStride)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        float* a0 = a, a1 = a + k, a2 = a + 2 * k, a3 = a + 3 * k;
        float* x0 = x, x1 = x + k, x2 = x + 2 * k, x3 = x + 3 * k;
        for (int i = 0; i < k; i += 16)
        {
            var r0 = Vector512.Load(a0 + i); var r1 = Vector512.Load(a1 + i);
            var r2 = Vector512.Load(a2 + i); var r3 = Vector512.Load(a3 + i);
            var v = Vector512.Load(x0 + i);
            c00 = Vector512.FusedMultiplyAdd(r0, v, c00); c10 = Vector512.FusedMultiplyAdd(r1, v, c10);
            c20 = Vector512.FusedMultiplyAdd(r2, v, c20); c30 = Vector512.FusedMultiplyAdd(r3, v, c30);
            v = Vector512.Load(x1 + i);
            c01 = Vector512.FusedMultiplyAdd(r0, v, c01); c11 = Vector512.FusedMultiplyAdd(r1, v, c11);
            c21 = Vector512.FusedMultiplyAdd(r2, v, c21); c31 = Vector512.FusedMultiplyAdd(r3, v, c31);
            v = Vector512.Load(x2 + i);
            c02 = Vector512.FusedMultiplyAdd(r0, v, c02); c12 = Vector512.FusedMultiplyAdd(r1, v, c12);
            c22 = Vector512.FusedMultiplyAdd(r2, v, c22); c32 = Vector512.FusedMultiplyAdd(r3, v, c32);
            v = Vector512.Load(x3 + i);
            c03 = Vector512.FusedMultiplyAdd(r0, v, c03); c13 = Vector512.FusedMultiplyAdd(r1, v, c13);
            c23 = Vector512.FusedMultiplyAdd(r2, v, c23); c33 = Vector512.FusedMultiplyAdd(r3, v, c33);
        }
        // One token's four rows per Sum4 (16 Vector512.Sum calls were ~40% of the kernel at k = 384).
        Reductions.Sum4(c00, c10, c20, c30).Store(y);
        Reductions.Sum4(c01, c11, c21, c31).Store(y + yStride);
        Reductions.Sum4(c02, c12, c22, c32).Store(y + 2 * yStride);
        Reductions.Sum4(c03, c13, c23, c33).Store(y + 3 * yStride);
    }

    /// <summary>Plain triple loop in double precision: the test oracle.</summary>
    public static void Reference(ReadOnlySpan<float> a, int rows, int k, ReadOnlySpan<float> x, int n, Span<float> y, int yStride)
    {
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows; r++)
            {
                double s = 0;
                for (int i = 0; i < k; i++) s += (double)a[r * k + i] * x[t * k + i];
                y[t * yStride + r] = (float)s;
            }
    }
}
