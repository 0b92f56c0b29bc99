using Kvq.Calibration.LowRank;
using Kvq.Tests.Cache.Codecs.LowRank;

namespace Kvq.Tests.Calibration.LowRank;

public class LowRankFitterTests
{
    /// <summary>Mean squared reconstruction error of mean + B^T B (x - mean) at each rank, in f64.</summary>
    private static double[] ErrorsByRank(Kvq.Cache.Codecs.LowRank.LowRankBasis basis, float[] x, int n, int hd)
    {
        var err = new double[hd + 1];
        var d = new double[hd];
        var rec = new double[hd];
        for (int t = 0; t < n; t++)
        {
            for (int c = 0; c < hd; c++) { d[c] = x[t * hd + c] - basis.Mean[c]; rec[c] = 0; }
            for (int r = 0; r <= hd; r++)
            {
                if (r > 0)
                {
                    double l = 0;
                    for (int c = 0; c < hd; c++) l += basis.Vectors[(r - 1) * hd + c] * d[c];
                    for (int c = 0; c < hd; c++) rec[c] += l * basis.Vectors[(r - 1) * hd + c];
                }
                for (int c = 0; c < hd; c++) err[r] += (d[c] - rec[c]) * (d[c] - rec[c]) / n;
            }
        }
        return err;
    }

    [Theory]
    [InlineData(16, 1)]
    [InlineData(13, 2)]
    [InlineData(64, 3)]
    public void ReconstructionErrorFallsWithRankAndEqualsDiscardedVariance(int hd, int seed)
    {
        const int n = 3000;
        var x = LowRankTestData.Activations(n, hd, hd, seed);
        var basis = LowRankFitter.FitOne(x, n, hd, 0, hd);
        var err = ErrorsByRank(basis, x, n, hd);
        double total = err[0];
        for (int r = 1; r <= hd; r++)
        {
            Assert.True(err[r] <= err[r - 1] + 1e-9 * total, $"rank {r}: error {err[r]} > rank {r - 1}: {err[r - 1]}");
            // PCA: the calibration error at rank r is the variance along the discarded directions.
            double discarded = basis.Eigenvalues.Skip(r).Sum(e => (double)e);
            Assert.True(Math.Abs(err[r] - discarded) <= 1e-4 * total, $"rank {r}: error {err[r]} vs discarded variance {discarded}");
        }
        Assert.True(err[hd] <= 1e-9 * total, $"full rank leaves {err[hd]} of {total}");
        Assert.True(err[6] < 0.05 * total, "six strong directions carry almost all the variance (the rest is 0.1 noise per channel)");
    }

    [Fact]
    public void LeadingDirectionMatchesPowerIteration()
    {
        const int n = 2000, hd = 24;
        var x = LowRankTestData.Activations(n, hd, hd, 5);
        var basis = LowRankFitter.FitOne(x, n, hd, 0, hd);
        // Independent reference: power iteration on the covariance applied as (1/n) X^T X v, mean from the data.
        var mean = new double[hd];
        for (int t = 0; t < n; t++) for (int c = 0; c < hd; c++) mean[c] += x[t * hd + c] / (double)n;
        var v = Enumerable.Repeat(1.0, hd).ToArray();
        for (int it = 0; it < 500; it++)
        {
            var w = new double[hd];
            for (int t = 0; t < n; t++)
            {
                double dot = 0;
                for (int c = 0; c < hd; c++) dot += (x[t * hd + c] - mean[c]) * v[c];
                for (int c = 0; c < hd; c++) w[c] += dot * (x[t * hd + c] - mean[c]) / n;
            }
            double norm = Math.Sqrt(w.Sum(a => a * a));
            for (int c = 0; c < hd; c++) v[c] = w[c] / norm;
        }
        double align = 0;
        for (int c = 0; c < hd; c++) align += v[c] * basis.Vectors[c];
        Assert.True(Math.Abs(Math.Abs(align) - 1) < 1e-5, $"|cos| = {Math.Abs(align)}");
        for (int c = 0; c < hd; c++) Assert.Equal(mean[c], basis.Mean[c], 4);
    }

    [Fact]
    public void FitsEveryLayerHeadAndSideApart()
    {
        var shape = Cache.Codecs.KvQuant.KvQuantTestData.Shape(2, 2, 16);
        var acts = LowRankTestData.ActivationSet(shape, 800, 3);
        var bases = LowRankFitter.Fit(acts, threads: 2);
        Assert.Equal((2, 2, 16, 800L), (bases.Layers, bases.KvHeads, bases.HeadDim, bases.Tokens));
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 2; h++)
            {
                var expected = LowRankFitter.FitOne(acts.Keys[l], 800, shape.KvDim, h * 16, 16);
                Assert.Equal(expected.Vectors, bases.For(Kvq.Cache.Codecs.KvSide.Key, l, h).Vectors);
                var ev = LowRankFitter.FitOne(acts.Values[l], 800, shape.KvDim, h * 16, 16);
                Assert.Equal(ev.Mean, bases.For(Kvq.Cache.Codecs.KvSide.Value, l, h).Mean);
            }
        Assert.NotEqual(bases.For(Kvq.Cache.Codecs.KvSide.Key, 0, 0).Mean, bases.For(Kvq.Cache.Codecs.KvSide.Key, 0, 1).Mean);
    }
}
