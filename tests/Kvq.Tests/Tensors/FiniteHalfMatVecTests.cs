using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Tests.Tensors;

/// <summary>The f16 matrix-vector product's cheaper conversion for matrices without inf/NaN
/// (<see cref="HalfDot.DotRowsFinite"/>) gives bitwise the sums of the exact per-row dot it replaced.</summary>
public class FiniteHalfMatVecTests
{
    [Avx512Fact("the finite conversion is an AVX-512 kernel; other machines take the exact per-row dot")]
    public unsafe void FiniteConversionEqualsExactOnEveryFiniteBitPattern()
    {
        var all = new ushort[65536];
        for (int i = 0; i < all.Length; i++) all[i] = (ushort)i;
        fixed (ushort* p = all)
            for (int i = 0; i < all.Length; i += 16)
            {
                var fast = HalfDot.F16ToF32Finite((Half*)(p + i));
                var exact = HalfDot.F16ToF32(System.Runtime.Intrinsics.Vector256.Load(p + i));
                for (int j = 0; j < 16; j++)
                {
                    if ((all[i + j] & 0x7c00) == 0x7c00) continue; // inf/NaN: excluded by AllFinite
                    Assert.True(BitConverter.SingleToUInt32Bits(fast[j]) == BitConverter.SingleToUInt32Bits(exact[j]),
                        $"0x{i + j:X4}: {exact[j]:R} vs {fast[j]:R}");
                }
            }
    }

    [Fact]
    public void ToSingleFiniteEqualsToSingleOnEveryFiniteBitPatternAndOddLengths()
    {
        var finite = Enumerable.Range(0, 65536).Where(i => (i & 0x7c00) != 0x7c00).Select(i => BitConverter.UInt16BitsToHalf((ushort)i)).ToArray();
        foreach (int n in new[] { finite.Length, 0, 1, 15, 17, 33, 100 })
        {
            var src = finite.AsSpan(n == finite.Length ? 0 : 7, n);
            var a = new float[n];
            var b = new float[n];
            HalfDot.ToSingle(src, a);
            HalfDot.ToSingle(src, b, finite: true);
            for (int i = 0; i < n; i++)
                Assert.True(BitConverter.SingleToUInt32Bits(a[i]) == BitConverter.SingleToUInt32Bits(b[i]), $"n {n}, {i}: {a[i]:R} vs {b[i]:R}");
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    [InlineData(16)]
    [InlineData(37)]
    public void AllFiniteFindsInfAndNaNAnywhere(int at)
    {
        var rng = new Random(TestSeeds.Of("allfinite", at));
        var a = Enumerable.Range(0, 38).Select(_ => (Half)(rng.NextDouble() * 200 - 100)).ToArray();
        Assert.True(HalfDot.AllFinite(a));
        a[at] = Half.PositiveInfinity;
        Assert.False(HalfDot.AllFinite(a));
        a[at] = Half.NaN;
        Assert.False(HalfDot.AllFinite(a));
        a[at] = Half.MaxValue;
        Assert.True(HalfDot.AllFinite(a));
    }

    [Theory]
    [InlineData(67, 384, 1)]
    [InlineData(67, 384, 2)]
    [InlineData(45, 1024, 2)]
    [InlineData(33, 400, 1)]
    [InlineData(9, 48, 2)]
    [InlineData(5, 17, 1)]
    [InlineData(130, 8, 2)]
    public void MatVecEqualsPerRowDotBitwise(int rows, int cols, int threads)
    {
        var rng = new Random(TestSeeds.Of("finitehalf", rows, cols, threads));
        var values = new Half[rows * cols];
        for (int i = 0; i < values.Length; i++)
        {
            // Normals over a wide range, subnormals, signed zeros and the largest finite value.
            double u = rng.NextDouble();
            values[i] = u < 0.05 ? BitConverter.UInt16BitsToHalf((ushort)(rng.Next(1, 1024) | (rng.Next(2) << 15)))
                : u < 0.07 ? (rng.Next(2) == 0 ? (Half)0f : (Half)(-0f))
                : u < 0.08 ? (rng.Next(2) == 0 ? Half.MaxValue : Half.MinValue)
                : (Half)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-14, 8)));
        }
        var x = Enumerable.Range(0, cols).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var w = WeightMatrix.FromBytes("w", rows, cols, GgmlType.F16, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        Assert.True(w.FiniteHalf);
        AssertMatVecEqualsRows(w, x, threads);
        // One inf makes the matrix take the exact conversion; the sums still match the per-row dot.
        values[rows * cols / 2] = Half.PositiveInfinity;
        var wInf = WeightMatrix.FromBytes("w", rows, cols, GgmlType.F16, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        Assert.False(wInf.FiniteHalf);
        AssertMatVecEqualsRows(wInf, x, threads);
    }

    private static void AssertMatVecEqualsRows(WeightMatrix w, float[] x, int threads)
    {
        var y = new float[w.Rows];
        using var par = new Parallelism(threads);
        w.MatVec(x, y, par);
        for (int r = 0; r < w.Rows; r++)
        {
            float expected = w.DotRow(r, x);
            Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[r]) || (float.IsNaN(expected) && float.IsNaN(y[r])),
                $"{w.Rows}x{w.Cols}, {threads} threads: row {r}: per-row {expected:R}, MatVec {y[r]:R}");
        }
    }
}
