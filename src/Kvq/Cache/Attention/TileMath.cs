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

    /// <summary>Four key rows at a time: each query vector load feeds four FMAs, and the four dot vectors are reduced
    /// together (<see cref="Sum4"/>, ~3.5 instructions per score where Vector512.Sum takes ~24: it was most of the
    /// cost of prefill's 48-row tiles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores512(float* tile, int count, int d, float* q, int nq, float* scores)
    {
        if (d == 64) { Scores64(tile, count, q, nq, scores); return; }
        // Vector512 acceleration (the caller's test) implies AVX-512F, which Sum4 uses.
        for (int j = 0; j < count; j += 4)
        {
            int n4 = Math.Min(4, count - j);
            // Missing rows of the last group repeat the first (their sums are computed and dropped).
            float* k0 = tile + j * d, k1 = n4 > 1 ? k0 + d : k0, k2 = n4 > 2 ? k0 + 2 * d : k0, k3 = n4 > 3 ? k0 + 3 * d : k0;
            for (int i = 0; i < nq; i++)
            {
                float* qi = q + i * d;
                var a0 = Vector512<float>.Zero;
                var a1 = Vector512<float>.Zero;
                var a2 = Vector512<float>.Zero;
                var a3 = Vector512<float>.Zero;
                for (int c = 0; c < d; c += 16)
                {
                    var qv = Vector512.Load(qi + c);
                    a0 = Vector512.FusedMultiplyAdd(qv, Vector512.Load(k0 + c), a0);
                    a1 = Vector512.FusedMultiplyAdd(qv, Vector512.Load(k1 + c), a1);
                    a2 = Vector512.FusedMultiplyAdd(qv, Vector512.Load(k2 + c), a2);
                    a3 = Vector512.FusedMultiplyAdd(qv, Vector512.Load(k3 + c), a3);
                }
                float* si = scores + i * count + j;
                var s4 = Sum4(a0, a1, a2, a3);
                if (n4 == 4) s4.Store(si);
                else for (int t = 0; t < n4; t++) si[t] = s4.GetElement(t);
            }
        }
    }

    /// <summary>Head dim 64: four key rows held in 16 registers while every query row streams past (4 loads per 16
    /// FMAs; with the rows reloaded per query the loop was bound by loads).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Scores64(float* tile, int count, float* q, int nq, float* scores)
    {
        for (int j = 0; j < count; j += 4)
        {
            int n4 = Math.Min(4, count - j);
            float* k0 = tile + j * 64, k1 = n4 > 1 ? k0 + 64 : k0, k2 = n4 > 2 ? k0 + 128 : k0, k3 = n4 > 3 ? k0 + 192 : k0;
            var k00 = Vector512.Load(k0); var k01 = Vector512.Load(k0 + 16); var k02 = Vector512.Load(k0 + 32); var k03 = Vector512.Load(k0 + 48);
            var k10 = Vector512.Load(k1); var k11 = Vector512.Load(k1 + 16); var k12 = Vector512.Load(k1 + 32); var k13 = Vector512.Load(k1 + 48);
            var k20 = Vector512.Load(k2); var k21 = Vector512.Load(k2 + 16); var k22 = Vector512.Load(k2 + 32); var k23 = Vector512.Load(k2 + 48);
            var k30 = Vector512.Load(k3); var k31 = Vector512.Load(k3 + 16); var k32 = Vector512.Load(k3 + 32); var k33 = Vector512.Load(k3 + 48);
            for (int i = 0; i < nq; i++)
            {
                float* qi = q + i * 64;
                var q0 = Vector512.Load(qi); var q1 = Vector512.Load(qi + 16); var q2 = Vector512.Load(qi + 32); var q3 = Vector512.Load(qi + 48);
                var a0 = Vector512.FusedMultiplyAdd(q3, k03, Vector512.FusedMultiplyAdd(q2, k02, Vector512.FusedMultiplyAdd(q1, k01, q0 * k00)));
                var a1 = Vector512.FusedMultiplyAdd(q3, k13, Vector512.FusedMultiplyAdd(q2, k12, Vector512.FusedMultiplyAdd(q1, k11, q0 * k10)));
                var a2 = Vector512.FusedMultiplyAdd(q3, k23, Vector512.FusedMultiplyAdd(q2, k22, Vector512.FusedMultiplyAdd(q1, k21, q0 * k20)));
                var a3 = Vector512.FusedMultiplyAdd(q3, k33, Vector512.FusedMultiplyAdd(q2, k32, Vector512.FusedMultiplyAdd(q1, k31, q0 * k30)));
                var s4 = Sum4(a0, a1, a2, a3);
                float* si = scores + i * count + j;
                if (n4 == 4) s4.Store(si);
                else for (int t = 0; t < n4; t++) si[t] = s4.GetElement(t);
            }
        }
    }

    /// <summary>See <see cref="Tensors.Reductions.Sum4"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d) =>
        Tensors.Reductions.Sum4(a, b, c, d);

    /// <summary>Two weight rows x 64 output columns per pass (8 accumulators): every tile load feeds two FMAs and
    /// eight independent chains hide the FMA latency (one row x 16 columns per pass was one dependent chain).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate512(float* tile, int count, int d, float* w, int nq, float* acc)
    {
        for (int i = 0; i < nq; i += 2)
        {
            bool two = i + 1 < nq;
            float* w0 = w + i * count, w1 = two ? w0 + count : w0;
            float* r0 = acc + i * d;
            float* r1 = two ? r0 + d : r0;
            int c = 0;
            for (; c + 64 <= d; c += 64)
            {
                var a0 = Vector512.Load(r0 + c); var a1 = Vector512.Load(r0 + c + 16);
                var a2 = Vector512.Load(r0 + c + 32); var a3 = Vector512.Load(r0 + c + 48);
                var b0 = Vector512.Load(r1 + c); var b1 = Vector512.Load(r1 + c + 16);
                var b2 = Vector512.Load(r1 + c + 32); var b3 = Vector512.Load(r1 + c + 48);
                for (int j = 0; j < count; j++)
                {
                    float* t = tile + j * d + c;
                    var x0 = Vector512.Load(t); var x1 = Vector512.Load(t + 16); var x2 = Vector512.Load(t + 32); var x3 = Vector512.Load(t + 48);
                    var u = Vector512.Create(w0[j]);
                    var v = Vector512.Create(w1[j]);
                    a0 = Vector512.FusedMultiplyAdd(x0, u, a0); a1 = Vector512.FusedMultiplyAdd(x1, u, a1);
                    a2 = Vector512.FusedMultiplyAdd(x2, u, a2); a3 = Vector512.FusedMultiplyAdd(x3, u, a3);
                    b0 = Vector512.FusedMultiplyAdd(x0, v, b0); b1 = Vector512.FusedMultiplyAdd(x1, v, b1);
                    b2 = Vector512.FusedMultiplyAdd(x2, v, b2); b3 = Vector512.FusedMultiplyAdd(x3, v, b3);
                }
                // With an odd row count the last pass computes its row twice; only the first copy is stored.
                if (two) { b0.Store(r1 + c); b1.Store(r1 + c + 16); b2.Store(r1 + c + 32); b3.Store(r1 + c + 48); }
                a0.Store(r0 + c); a1.Store(r0 + c + 16); a2.Store(r0 + c + 32); a3.Store(r0 + c + 48);
            }
            for (; c < d; c += 16)
            {
                var a = Vector512.Load(r0 + c);
                var b = Vector512.Load(r1 + c);
                for (int j = 0; j < count; j++)
                {
                    var x = Vector512.Load(tile + j * d + c);
                    a = Vector512.FusedMultiplyAdd(x, Vector512.Create(w0[j]), a);
                    b = Vector512.FusedMultiplyAdd(x, Vector512.Create(w1[j]), b);
                }
                if (two) b.Store(r1 + c);
                a.Store(r0 + c);
            }
        }
    }
}
