using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kvq.Tensors.Quant;

namespace Kvq.Cache.Attention;

/// <summary>
/// <see cref="TileMath"/> over an f16 tile read in place: each 16-value slice is widened in a register and used
/// immediately (AVX-512, head dims that are multiples of 16). Checked against decode-then-TileMath in the tests.
/// </summary>
public static unsafe class HalfTileMath
{
    public static bool IsSupported(int headDim) => Avx512F.IsSupported && Vector512.IsHardwareAccelerated && headDim % 16 == 0;

    /// <summary>scores (nq, count) = q (nq, d) x the tile's keys. With a few query rows (decode: a GQA group) each
    /// block of four keys is widened once into an L1 buffer and serves every row; the sums are bitwise those of
    /// <see cref="ScoresPerRow"/> (the same FMAs in the same order; the widening is exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    public static void Scores(ReadOnlySpan<Half> tile, int count, int d, ReadOnlySpan<float> q, int nq, Span<float> scores)
    {
        if (nq == 1 || d > MaxWidenedDim) { ScoresPerRow(tile, count, d, q, nq, scores); return; }
        fixed (Half* pt = tile)
        {
            if (FiniteWidening && AllFinite((ushort*)pt, (count & ~3) * d)) ScoresWidened<FiniteWiden>(tile, count, d, q, nq, scores);
            else ScoresWidened<ExactWiden>(tile, count, d, q, nq, scores);
        }
    }

    /// <summary><see cref="Scores"/>'s body: every group of four keys widened by <typeparamref name="TWiden"/> (the
    /// same floats either way) into an L1 buffer that serves every query row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    private static void ScoresWidened<TWiden>(ReadOnlySpan<Half> tile, int count, int d, ReadOnlySpan<float> q, int nq, Span<float> scores)
        where TWiden : struct, IHalfWiden
    {
        float* kb = stackalloc float[4 * d];
        fixed (Half* pt = tile) fixed (float* pq = q) fixed (float* ps = scores)
        {
            ushort* t = (ushort*)pt;
            int j = 0;
            for (; j + 4 <= count; j += 4)
            {
                ushort* k0 = t + j * d;
                for (int c = 0; c < 4 * d; c += 16) TWiden.Widen(k0 + c).Store(kb + c);
                float* b0 = kb, b1 = kb + d, b2 = kb + 2 * d, b3 = kb + 3 * d;
                for (int i = 0; i < nq; i++)
                {
                    float* qi = pq + i * d;
                    Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    for (int c = 0; c < d; c += 16)
                    {
                        var qv = Vector512.Load(qi + c);
                        a0 = Vector512.FusedMultiplyAdd(Vector512.Load(b0 + c), qv, a0);
                        a1 = Vector512.FusedMultiplyAdd(Vector512.Load(b1 + c), qv, a1);
                        a2 = Vector512.FusedMultiplyAdd(Vector512.Load(b2 + c), qv, a2);
                        a3 = Vector512.FusedMultiplyAdd(Vector512.Load(b3 + c), qv, a3);
                    }
                    Tensors.Reductions.Sum4(a0, a1, a2, a3).Store(ps + i * count + j);
                }
            }
            if (j < count)
                ScoresPerRow(tile[(j * d)..], count - j, d, q, nq, scores, count, j);
        }
    }

    /// <summary>Widest head dim whose four widened keys <see cref="Scores"/> buffers on the stack (4 KB).</summary>
    private const int MaxWidenedDim = 256;

    /// <summary>Scores with every key slice widened once per query row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void ScoresPerRow(ReadOnlySpan<Half> tile, int count, int d, ReadOnlySpan<float> q, int nq, Span<float> scores) =>
        ScoresPerRow(tile, count, d, q, nq, scores, count, 0);

    /// <summary>Keys [0, count) of <paramref name="tile"/> into score columns [col0, col0 + count) of rows
    /// <paramref name="stride"/> wide.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ScoresPerRow(ReadOnlySpan<Half> tile, int count, int d, ReadOnlySpan<float> q, int nq, Span<float> scores, int stride, int col0)
    {
        fixed (Half* pt = tile) fixed (float* pq = q) fixed (float* ps = scores)
        {
            ushort* t = (ushort*)pt;
            int j = 0;
            // Four keys at a time: one Sum4 reduces their four dots with a query row (~14 instructions for four
            // scores, where Vector512.Sum took ~24 for one), and the four scores are stored together.
            for (; j + 4 <= count; j += 4)
            {
                ushort* k0 = t + j * d, k1 = k0 + d, k2 = k1 + d, k3 = k2 + d;
                for (int i = 0; i < nq; i++)
                {
                    float* qi = pq + i * d;
                    Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    for (int c = 0; c < d; c += 16)
                    {
                        var qv = Vector512.Load(qi + c);
                        a0 = Vector512.FusedMultiplyAdd(HalfDot.F16ToF32(Vector256.Load(k0 + c)), qv, a0);
                        a1 = Vector512.FusedMultiplyAdd(HalfDot.F16ToF32(Vector256.Load(k1 + c)), qv, a1);
                        a2 = Vector512.FusedMultiplyAdd(HalfDot.F16ToF32(Vector256.Load(k2 + c)), qv, a2);
                        a3 = Vector512.FusedMultiplyAdd(HalfDot.F16ToF32(Vector256.Load(k3 + c)), qv, a3);
                    }
                    Tensors.Reductions.Sum4(a0, a1, a2, a3).Store(ps + i * stride + col0 + j);
                }
            }
            for (; j < count; j++)
            {
                ushort* k = t + j * d;
                for (int i = 0; i < nq; i++)
                {
                    float* qi = pq + i * d;
                    var a = Vector512<float>.Zero;
                    for (int c = 0; c < d; c += 16)
                        a = Vector512.FusedMultiplyAdd(HalfDot.F16ToF32(Vector256.Load(k + c)), Vector512.Load(qi + c), a);
                    ps[i * stride + col0 + j] = Vector512.Sum(a);
                }
            }
        }
    }

    /// <summary>acc (nq, d) += w (nq, count) x the tile's values. With up to four query rows and head dims that are
    /// multiples of 64, each token's 64-column slice is widened once and meets every row's accumulators (up to 16
    /// registers, independent FMA chains); the sums are bitwise those of <see cref="AccumulatePerRow"/> (per output
    /// element the same FMAs in the same token order), which widened every slice once per row and ran one
    /// dependent FMA chain at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate(ReadOnlySpan<Half> tile, int count, int d, ReadOnlySpan<float> w, int nq, Span<float> acc)
    {
        if (nq > 4 || d % 64 != 0) { AccumulatePerRow(tile, count, d, w, nq, acc); return; }
        fixed (Half* pt = tile)
        {
            if (FiniteWidening && AllFinite((ushort*)pt, count * d)) Accumulate<FiniteWiden>(tile, count, d, w, nq, acc);
            else Accumulate<ExactWiden>(tile, count, d, w, nq, acc);
        }
    }

    /// <summary><see cref="Accumulate(ReadOnlySpan{Half}, int, int, ReadOnlySpan{float}, int, Span{float})"/>'s body,
    /// each value slice widened by <typeparamref name="TWiden"/> (the same floats either way).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate<TWiden>(ReadOnlySpan<Half> tile, int count, int d, ReadOnlySpan<float> w, int nq, Span<float> acc)
        where TWiden : struct, IHalfWiden
    {
        fixed (Half* pt = tile) fixed (float* pw = w) fixed (float* pa = acc)
        {
            ushort* t = (ushort*)pt;
            float* w0 = pw, w1 = pw + count, w2 = pw + 2 * count, w3 = pw + 3 * count;
            for (int c = 0; c < d; c += 64)
            {
                float* o0 = pa + c, o1 = o0 + d, o2 = o1 + d, o3 = o2 + d;
                Vector512<float> p0 = Vector512.Load(o0), p1 = Vector512.Load(o0 + 16), p2 = Vector512.Load(o0 + 32), p3 = Vector512.Load(o0 + 48);
                Vector512<float> q0 = default, q1 = default, q2 = default, q3 = default;
                Vector512<float> r0 = default, r1 = default, r2 = default, r3 = default;
                Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
                if (nq > 1) { q0 = Vector512.Load(o1); q1 = Vector512.Load(o1 + 16); q2 = Vector512.Load(o1 + 32); q3 = Vector512.Load(o1 + 48); }
                if (nq > 2) { r0 = Vector512.Load(o2); r1 = Vector512.Load(o2 + 16); r2 = Vector512.Load(o2 + 32); r3 = Vector512.Load(o2 + 48); }
                if (nq > 3) { s0 = Vector512.Load(o3); s1 = Vector512.Load(o3 + 16); s2 = Vector512.Load(o3 + 32); s3 = Vector512.Load(o3 + 48); }
                for (int j = 0; j < count; j++)
                {
                    ushort* v = t + j * d + c;
                    var v0 = TWiden.Widen(v);
                    var v1 = TWiden.Widen(v + 16);
                    var v2 = TWiden.Widen(v + 32);
                    var v3 = TWiden.Widen(v + 48);
                    var b = Vector512.Create(w0[j]);
                    p0 = Vector512.FusedMultiplyAdd(v0, b, p0); p1 = Vector512.FusedMultiplyAdd(v1, b, p1);
                    p2 = Vector512.FusedMultiplyAdd(v2, b, p2); p3 = Vector512.FusedMultiplyAdd(v3, b, p3);
                    if (nq > 1)
                    {
                        b = Vector512.Create(w1[j]);
                        q0 = Vector512.FusedMultiplyAdd(v0, b, q0); q1 = Vector512.FusedMultiplyAdd(v1, b, q1);
                        q2 = Vector512.FusedMultiplyAdd(v2, b, q2); q3 = Vector512.FusedMultiplyAdd(v3, b, q3);
                    }
                    if (nq > 2)
                    {
                        b = Vector512.Create(w2[j]);
                        r0 = Vector512.FusedMultiplyAdd(v0, b, r0); r1 = Vector512.FusedMultiplyAdd(v1, b, r1);
                        r2 = Vector512.FusedMultiplyAdd(v2, b, r2); r3 = Vector512.FusedMultiplyAdd(v3, b, r3);
                    }
                    if (nq > 3)
                    {
                        b = Vector512.Create(w3[j]);
                        s0 = Vector512.FusedMultiplyAdd(v0, b, s0); s1 = Vector512.FusedMultiplyAdd(v1, b, s1);
                        s2 = Vector512.FusedMultiplyAdd(v2, b, s2); s3 = Vector512.FusedMultiplyAdd(v3, b, s3);
                    }
                }
                p0.Store(o0); p1.Store(o0 + 16); p2.Store(o0 + 32); p3.Store(o0 + 48);
                if (nq > 1) { q0.Store(o1); q1.Store(o1 + 16); q2.Store(o1 + 32); q3.Store(o1 + 48); }
                if (nq > 2) { r0.Store(o2); r1.Store(o2 + 16); r2.Store(o2 + 32); r3.Store(o2 + 48); }
                if (nq > 3) { s0.Store(o3); s1.Store(o3 + 16); s2.Store(o3 + 32); s3.Store(o3 + 48); }
            }
        }
    }

    /// <summary>Accumulate with every value slice widened once per query row, one FMA chain at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void AccumulatePerRow(ReadOnlySpan<Half> tile, int count, int d, ReadOnlySpan<float> w, int nq, Span<float> acc)
    {
        fixed (Half* pt = tile) fixed (float* pw = w) fixed (float* pa = acc)
        {
            ushort* t = (ushort*)pt;
            for (int c = 0; c < d; c += 16)
                for (int i = 0; i < nq; i++)
                {
                    float* wi = pw + i * count;
                    var a = Vector512.Load(pa + i * d + c);
                    for (int j = 0; j < count; j++)
                        a = Vector512.FusedMultiplyAdd(HalfDot.F16ToF32(Vector256.Load(t + j * d + c)), Vector512.Create(wi[j]), a);
                    a.Store(pa + i * d + c);
                }
        }
    }

    /// <summary>Whether the decode kernels widen tiles without inf/NaN the cheaper way (a switch for the benchmarks' A/B
    /// only: <c>bench/Kvq.Micro --batch-profile</c>; results do not depend on it).</summary>
    internal static bool FiniteWidening = true;

    /// <summary>Whether none of the first <paramref name="halves"/> values of a tile is an inf or NaN (exponent bits all
    /// ones), so that <see cref="HalfDot.F16ToF32Finite"/> (4 instructions per 16 values) widens them to exactly the
    /// floats of <see cref="HalfDot.F16ToF32"/> (9). One AND and one unsigned max per 32 values: a decode block's keys
    /// or values are widened once and checked once, so the check costs ~1/10 of what the cheaper widening saves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool AllFinite(ushort* t, int halves)
    {
        var exp = Vector512.Create((ushort)0x7c00);
        var any = Vector512<ushort>.Zero;
        int i = 0;
        for (; i + 32 <= halves; i += 32) any = Vector512.Max(any, Vector512.Load(t + i) & exp);
        if (Vector512.EqualsAny(any, exp)) return false;
        for (; i < halves; i++)
            if ((t[i] & 0x7c00) == 0x7c00) return false;
        return true;
    }

    /// <summary>How a kernel widens 16 halves (a struct type parameter, so the JIT compiles one loop per choice).</summary>
    internal interface IHalfWiden
    {
        static abstract Vector512<float> Widen(ushort* p);
    }

    /// <summary>Exact for every input, inf and NaN included (<see cref="HalfDot.F16ToF32"/>).</summary>
    internal struct ExactWiden : IHalfWiden
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Widen(ushort* p) => HalfDot.F16ToF32(Vector256.Load(p));
    }

    /// <summary>Exact for finite inputs only (<see cref="HalfDot.F16ToF32Finite"/>): callers check the tile first.</summary>
    internal struct FiniteWiden : IHalfWiden
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Widen(ushort* p) => HalfDot.F16ToF32Finite((Half*)p);
    }
}
