using Kvq.Tensors;

namespace Kvq.Tests.Tensors;

/// <summary>The fast Walsh-Hadamard transform against the dense Sylvester matrix, its scalar twin, and itself (involution).</summary>
public class HadamardTests
{
    private static float[] Random(int n, int seed)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(rng.NextDouble() * 4 - 2) + (i % 7 == 3 ? 9f : 0f);
        return x;
    }

    [Theory]
    [InlineData(1, 3)]
    [InlineData(2, 5)]
    [InlineData(4, 1)]
    [InlineData(8, 3)]
    [InlineData(16, 2)]
    [InlineData(32, 3)]
    [InlineData(64, 5)]
    [InlineData(128, 1)]
    [InlineData(256, 2)]
    public void EqualsDenseOrthonormalMatrix(int n, int runs)
    {
        var x = Random(n * runs, n);
        var y = (float[])x.Clone();
        Hadamard.Transform(y, n);
        for (int r = 0; r < runs; r++)
            for (int i = 0; i < n; i++)
            {
                double e = 0, mag = 0;
                for (int j = 0; j < n; j++) { e += Hadamard.Entry(i, j) * (double)x[r * n + j]; mag += Math.Abs(x[r * n + j]); }
                e /= Math.Sqrt(n);
                Assert.True(Math.Abs(y[r * n + i] - e) <= 1e-6 * mag, $"n={n} run {r} [{i}]: {y[r * n + i]} vs {e}");
            }
    }

    [Theory]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(64)]
    [InlineData(128)]
    public void SimdEqualsScalarTwinBitForBit(int n)
    {
        var a = Random(n * 3, 17 + n);
        var b = (float[])a.Clone();
        Hadamard.Transform(a, n);
        Hadamard.TransformReference(b, n);
        for (int i = 0; i < a.Length; i++) Assert.Equal(BitConverter.SingleToInt32Bits(b[i]), BitConverter.SingleToInt32Bits(a[i]));
    }

    [Fact]
    public void IsItsOwnInverseAndKeepsNorms()
    {
        var x = Random(96, 4);
        var y = (float[])x.Clone();
        Hadamard.Transform(y, 32);
        double nx = x.Sum(v => (double)v * v), ny = y.Sum(v => (double)v * v);
        Assert.Equal(nx, ny, nx * 1e-6);
        Hadamard.Transform(y, 32);
        for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) <= 1e-5 * (1 + Math.Abs(x[i])), $"[{i}] {x[i]} -> {y[i]}");
    }

    [Theory]
    [InlineData(64, 64)]
    [InlineData(96, 32)]
    [InlineData(8, 8)]
    [InlineData(80, 16)]
    [InlineData(7, 1)]
    public void BlockSizeIsLargestPowerOfTwoDividing(int length, int expected) => Assert.Equal(expected, Hadamard.BlockSize(length));

    [Fact]
    public void RefusesSizesThatAreNotPowersOfTwoOrDoNotTile()
    {
        Assert.Contains("power of two", Assert.Throws<ArgumentException>(() => Hadamard.Transform(new float[12], 12)).Message);
        Assert.Contains("whole number", Assert.Throws<ArgumentException>(() => Hadamard.Transform(new float[12], 8)).Message);
    }
}
