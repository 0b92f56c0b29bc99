using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Kvq.Cache.Attention;

/// <summary>
/// Dense f32 tile products used by attention after a block is decoded. Head dims that are multiples of 16 take an
/// inline AVX-512 path (a library call per 64-value dot cost more than the dot itself); the plain loops are the
/// reference twins.
/// </summary>
public static unsafe class TileMath
{
    /// <summary>scores (nq, count) = q (nq, d) x tile (count, d)^T.</summary>
    public static void Scores(ReadOnlySpan<float> tile, int count, int d, ReadOnlySpan<float> q, int nq, Span<float> scores)
    {
        if (Vector512.IsHardwareAccelerated && d % 16 == 0)
        {
            fixed (float* pt = tile) fixed (float* pq = q) fixed (float* ps = scores) Scores512(pt, count, d, pq, nq, ps);
            return;
        }
        ScoresReference(tile, count, d, q, nq, scores);
    }

    /// <summary>acc (nq, d) += w (nq, count) x tile (count, d).</summary>
    public static void Accumulate(ReadOnlySpan<float> tile, int count, int d, ReadOnlySpan<float> w, int nq, Span<float> acc)
    {
        if (Vector512.IsHardwareAccelerated && d % 16 == 0)
        {
            fixed (float* pt = tile) fixed (float* pw = w) fixed (float* pa = acc) Accumulate512(pt, count, d, pw, nq, pa);
            return;
        }
        AccumulateReference(tile, count, d, w, nq, acc);
    }

    public static void ScoresReference(ReadOnlySpan<float> tile, int count, int d, ReadOnlySpan<float> q, int nq, Span<float> scores)
    {
        for (int i = 0; i < nq; i++)
        {
            var qi = q.Slice(i * d, d);
            var si = scores.Slice(i * count, count);
            for (int j = 0; j < count; j++) si[j] = TensorPrimitives.Dot(qi, tile.Slice(j * d, d));
        }
    }

    public static void AccumulateReference(ReadOnlySpan<float> tile, int count, int d, ReadOnlySpan<float> w, int nq, Span<float> acc)
    {
        for (int i = 0; i < nq; i++)
        {
            var ai = acc.Slice(i * d, d);
            var wi = w.Slice(i * count, count);
            for (int j = 0; j < count; j++)
            {
                float wj = wi[j];
                if (wj != 0f) TensorPrimitives.MultiplyAdd(tile.Slice(j * d, d), wj, ai, ai);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores512(float* tile, int count, int d, float* q, int nq, float* scores)
    {
        for (int i = 0; i < nq; i++)
        {
            float* qi = q + i * d;
            float* si = scores + i * count;
            int j = 0;
            // Two key rows at a time: each query vector load feeds two FMAs.
            for (; j + 2 <= count; j += 2)
            {
                float* k0 = tile + j * d, k1 = k0 + d;
                var a0 = Vector512<float>.Zero;
                var a1 = Vector512<float>.Zero;
                for (int c = 0; c < d; c += 16)
                {
                    var qv = Vector512.Load(qi + c);
                    a0 = Vector512.FusedMultiplyAdd(qv, Vector512.Load(k0 + c), a0);
                    a1 = Vector512.FusedMultiplyAdd(qv, Vector512.Load(k1 + c), a1);
                }
                si[j] = Vector512.Sum(a0);
                si[j + 1] = Vector512.Sum(a1);
            }
            for (; j < count; j++)
            {
                float* k0 = tile + j * d;
                var a0 = Vector512<float>.Zero;
                for (int c = 0; c < d; c += 16) a0 = Vector512.FusedMultiplyAdd(Vector512.Load(qi + c), Vector512.Load(k0 + c), a0);
                si[j] = Vector512.Sum(a0);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate512(float* tile, int count, int d, float* w, int nq, float* acc)
    {
        for (int i = 0; i < nq; i++)
        {
            float* ai = acc + i * d;
            float* wi = w + i * count;
            for (int c = 0; c < d; c += 16)
            {
                // One 16-lane slice of the output row stays in a register across all tokens of the tile.
                var a = Vector512.Load(ai + c);
                for (int j = 0; j < count; j++)
                    a = Vector512.FusedMultiplyAdd(Vector512.Load(tile + j * d + c), Vector512.Create(wi[j]), a);
                a.Store(ai + c);
            }
        }
    }
}
