using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Kvq.Tensors;

/// <summary>
/// The orthonormal Walsh-Hadamard transform H/sqrt(n) (Sylvester order: H[i, j] = (-1)^popcount(i &amp; j)) applied in
/// place to consecutive runs of n values, n a power of two. H/sqrt(n) is symmetric and its own inverse, so the same
/// call rotates and un-rotates. Written by hand (no library offers a span FWHT): log2(n) butterfly stages of
/// (a, b) -> (a + b, a - b), then one multiply by 1/sqrt(n). The SIMD path does the same adds in the same order per
/// element as <see cref="TransformReference"/>, so the two agree bit for bit.
/// </summary>
public static class Hadamard
{
    /// <summary>The transform size used for a vector of <paramref name="length"/> values: the largest power of two that
    /// divides it (a head dim of 64 gets one 64-point transform; 96 gets three of 32, as llama.cpp sizes its rotation).</summary>
    public static int BlockSize(int length)
    {
        if (length <= 0) throw new ArgumentOutOfRangeException(nameof(length), $"length {length} must be positive");
        return length & -length;
    }

    /// <summary>x[k*n .. (k+1)*n) = H/sqrt(n) x[k*n .. (k+1)*n) for every run; x.Length must be a multiple of n.</summary>
    public static void Transform(Span<float> x, int n)
    {
        Check(x.Length, n);
        if (!Vector128.IsHardwareAccelerated || n < 8) { TransformReference(x, n); return; }
        float scale = 1f / MathF.Sqrt(n);
        ref float p = ref MemoryMarshal.GetReference(x);
        for (int start = 0; start < x.Length; start += n)
        {
            ref float r = ref Unsafe.Add(ref p, start);
            // Strides 1 and 2 inside a vector of 4: scalar butterflies (cheap: 2 of log2(n) stages).
            for (int h = 1; h < 4; h <<= 1)
                for (int i = 0; i < n; i += 2 * h)
                    for (int j = i; j < i + h; j++)
                    {
                        float a = Unsafe.Add(ref r, j), b = Unsafe.Add(ref r, j + h);
                        Unsafe.Add(ref r, j) = a + b;
                        Unsafe.Add(ref r, j + h) = a - b;
                    }
            for (int h = 4; h < n; h <<= 1)
            {
                if (Vector256.IsHardwareAccelerated && h >= 8)
                    for (int i = 0; i < n; i += 2 * h)
                        for (int j = i; j < i + h; j += 8)
                        {
                            var a = Vector256.LoadUnsafe(ref r, (nuint)j);
                            var b = Vector256.LoadUnsafe(ref r, (nuint)(j + h));
                            (a + b).StoreUnsafe(ref r, (nuint)j);
                            (a - b).StoreUnsafe(ref r, (nuint)(j + h));
                        }
                else
                    for (int i = 0; i < n; i += 2 * h)
                        for (int j = i; j < i + h; j += 4)
                        {
                            var a = Vector128.LoadUnsafe(ref r, (nuint)j);
                            var b = Vector128.LoadUnsafe(ref r, (nuint)(j + h));
                            (a + b).StoreUnsafe(ref r, (nuint)j);
                            (a - b).StoreUnsafe(ref r, (nuint)(j + h));
                        }
            }
        }
        System.Numerics.Tensors.TensorPrimitives.Multiply(x, scale, x);
    }

    /// <summary>Scalar twin of <see cref="Transform"/> (same butterflies in the same order: bit-identical results).</summary>
    public static void TransformReference(Span<float> x, int n)
    {
        Check(x.Length, n);
        float scale = 1f / MathF.Sqrt(n);
        for (int start = 0; start < x.Length; start += n)
        {
            var r = x.Slice(start, n);
            for (int h = 1; h < n; h <<= 1)
                for (int i = 0; i < n; i += 2 * h)
                    for (int j = i; j < i + h; j++)
                    {
                        float a = r[j], b = r[j + h];
                        r[j] = a + b;
                        r[j + h] = a - b;
                    }
        }
        for (int i = 0; i < x.Length; i++) x[i] *= scale;
    }

    /// <summary>Entry (i, j) of the unnormalised Sylvester matrix: +1 or -1 (tests use it as the dense oracle).</summary>
    public static int Entry(int i, int j) => (BitOperations.PopCount((uint)(i & j)) & 1) == 0 ? 1 : -1;

    private static void Check(int length, int n)
    {
        if (n <= 0 || (n & (n - 1)) != 0) throw new ArgumentException($"Hadamard size {n} is not a power of two");
        if (length % n != 0) throw new ArgumentException($"{length} values are not a whole number of {n}-point transforms");
    }
}
