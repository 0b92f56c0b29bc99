using System.Numerics.Tensors;
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

    /// <summary>f16 -> f32 for a span. TensorPrimitives.ConvertToSingle(Half) measured ~1 ns/value here (it is not
    /// vectorised for Half on this runtime), which made the f16 KV cache slower than f32; this runs at memory speed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ToSingle(ReadOnlySpan<Half> src, Span<float> dst)
    {
        if (dst.Length < src.Length) throw new ArgumentException("destination too short");
        int n = src.Length, i = 0;
        fixed (Half* ps = src)
        fixed (float* pd = dst)
        {
            if (Avx512F.IsSupported)
                for (; i + 16 <= n; i += 16)
                    F16ToF32(Vector256.Load((ushort*)ps + i)).Store(pd + i);
            for (; i < n; i++) pd[i] = (float)ps[i];
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
