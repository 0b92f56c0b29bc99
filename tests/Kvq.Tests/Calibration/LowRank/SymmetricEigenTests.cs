using Kvq.Calibration.LowRank;

namespace Kvq.Tests.Calibration.LowRank;

public class SymmetricEigenTests
{
    private static double[] RandomSymmetric(int n, int seed, int rank = -1)
    {
        // B B^T with B n x rank (positive semi-definite, singular when rank < n) or a general symmetric matrix.
        var rng = new Random(seed);
        var a = new double[n * n];
        if (rank > 0)
        {
            var b = new double[n * rank];
            for (int i = 0; i < b.Length; i++) b[i] = rng.NextDouble() * 2 - 1;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                    for (int k = 0; k < rank; k++) a[i * n + j] += b[i * rank + k] * b[j * rank + k];
        }
        else
            for (int i = 0; i < n; i++)
                for (int j = 0; j <= i; j++) a[i * n + j] = a[j * n + i] = rng.NextDouble() * 2 - 1;
        return a;
    }

    [Theory]
    [InlineData(1, -1)]
    [InlineData(2, -1)]
    [InlineData(5, -1)]
    [InlineData(17, -1)]
    [InlineData(64, -1)]
    [InlineData(64, 9)]
    [InlineData(33, 33)]
    public void EigenpairsSatisfyAvEqualsLambdaV(int n, int rank)
    {
        var a = RandomSymmetric(n, n * 31 + rank, rank);
        var (values, vectors) = SymmetricEigen.Decompose(a, n);
        double norm = Math.Sqrt(a.Sum(x => x * x));
        for (int k = 0; k < n; k++)
        {
            if (k > 0) Assert.True(values[k] <= values[k - 1], $"eigenvalue {k} {values[k]} > {values[k - 1]}");
            for (int i = 0; i < n; i++)
            {
                double av = 0;
                for (int j = 0; j < n; j++) av += a[i * n + j] * vectors[k * n + j];
                Assert.True(Math.Abs(av - values[k] * vectors[k * n + i]) <= 1e-10 * Math.Max(1, norm), $"pair {k}, row {i}");
            }
            for (int m = k; m < n; m++)
            {
                double dot = 0;
                for (int j = 0; j < n; j++) dot += vectors[k * n + j] * vectors[m * n + j];
                Assert.True(Math.Abs(dot - (k == m ? 1 : 0)) < 1e-12, $"vectors {k}, {m}: dot {dot}");
            }
        }
        Assert.Equal(Enumerable.Range(0, n).Sum(i => a[i * n + i]), values.Sum(), 9); // trace
        if (rank > 0 && rank < n)
            for (int k = rank; k < n; k++) Assert.True(Math.Abs(values[k]) < 1e-10 * norm, $"eigenvalue {k} of a rank-{rank} matrix is {values[k]}");
    }

    [Fact]
    public void DiagonalMatrixIsSortedWithUnitVectors()
    {
        var a = new double[9];
        a[0] = 1; a[4] = 3; a[8] = 2;
        var (values, vectors) = SymmetricEigen.Decompose(a, 3);
        Assert.Equal([3.0, 2.0, 1.0], values);
        Assert.Equal([0.0, 1, 0, 0, 0, 1, 1, 0, 0], vectors);
    }

    [Fact]
    public void RefusesAsymmetricMatrix()
    {
        var e = Assert.Throws<ArgumentException>(() => SymmetricEigen.Decompose([1, 2, 3, 4], 2));
        Assert.Contains("not symmetric", e.Message);
    }
}
