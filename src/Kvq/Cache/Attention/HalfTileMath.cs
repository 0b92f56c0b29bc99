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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Scores(ReadOnlySpan<Half> tile, int count, int d, ReadOnlySpan<float> q, int nq, Span<float> scores)
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
                    Kvq.Tensors.Reductions.Sum4(a0, a1, a2, a3).Store(ps + i * count + j);
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
                    ps[i * count + j] = Vector512.Sum(a);
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Accumulate(ReadOnlySpan<Half> tile, int count, int d, ReadOnlySpan<float> w, int nq, Span<float> acc)
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
}
