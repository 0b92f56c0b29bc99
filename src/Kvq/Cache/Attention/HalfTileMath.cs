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
            for (int j = 0; j < count; j++)
            {
                ushort* k = t + j * d;
                // Widen the key row once per token; all nq queries use it (GQA).
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
