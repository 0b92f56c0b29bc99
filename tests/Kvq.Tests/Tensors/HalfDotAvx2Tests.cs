using System.Runtime.Intrinsics;
using Kvq.Tensors.Quant;

namespace Kvq.Tests.Tensors;

/// <summary>The AVX2 f16 paths (machines without AVX-512) against the scalar conversion and dot.</summary>
public sealed class HalfDotAvx2Tests
{
    /// <summary>Every one of the 65,536 f16 bit patterns widens to the bits (float)Half gives (NaNs: a NaN).</summary>
    [Avx2Fact("the AVX2 widening is what it tests")]
    public void WideningEqualsTheScalarConversionOnEveryBitPattern()
    {
        var bits = new ushort[8];
        for (int start = 0; start < 65536; start += 8)
        {
            for (int j = 0; j < 8; j++) bits[j] = (ushort)(start + j);
            var got = HalfDot.F16ToF32x8(Vector128.Create(bits));
            for (int j = 0; j < 8; j++)
            {
                float expected = (float)BitConverter.UInt16BitsToHalf(bits[j]);
                if (float.IsNaN(expected)) Assert.True(float.IsNaN(got[j]), $"0x{bits[j]:x4}");
                else Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(got[j]),
                    $"0x{bits[j]:x4}: {got[j]} vs {expected}");
            }
        }
    }

    [Avx2Theory("the AVX2 dot is what it tests")]
    [InlineData(8)]
    [InlineData(23)]
    [InlineData(64)]
    [InlineData(1001)]
    public void DotEqualsTheScalarDotWithinRounding(int n)
    {
        var rng = new Random(TestSeeds.Of(nameof(DotEqualsTheScalarDotWithinRounding), n));
        var a = new Half[n];
        var x = new float[n];
        double abs = 0;
        for (int i = 0; i < n; i++)
        {
            a[i] = (Half)(rng.NextSingle() * 4 - 2);
            if (i % 97 == 5) a[i] = BitConverter.UInt16BitsToHalf((ushort)rng.Next(1, 0x400));   // subnormals
            x[i] = rng.NextSingle() * 2 - 1;
            abs += Math.Abs((double)(float)a[i] * x[i]);
        }
        float got = HalfDot.DotAvx2(a, x), expected = HalfDot.Reference(a, x);
        Assert.True(Math.Abs(got - expected) <= 1e-6 * abs + 1e-30, $"{got} vs {expected} (sum of |terms| {abs})");
        var widened = new float[n];
        HalfDot.ToSingle(a, widened);
        for (int i = 0; i < n; i++) Assert.Equal((float)a[i], widened[i]);
    }
}
