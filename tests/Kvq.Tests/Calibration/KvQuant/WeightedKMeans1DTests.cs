using Kvq.Calibration.KvQuant;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Calibration.KvQuant;

public class WeightedKMeans1DTests
{
    private static (float[] X, float[] W) Data(int n, int seed)
    {
        var rng = new Random(seed);
        var x = new float[n];
        var w = new float[n];
        for (int i = 0; i < n; i++)
        {
            x[i] = (float)Math.Clamp(KvQuantTestData.Gaussian(rng) * 0.35, -1, 1);
            // Sensitivity concentrated on the positive tail: a weighted fit should spend levels there.
            w[i] = (float)((x[i] > 0.4 ? 50 : 1) * (0.5 + rng.NextDouble()));
        }
        return (x, w);
    }

    [Fact]
    public void SameInputAndSeedGiveTheSameLevels()
    {
        var (x, w) = Data(5000, 1);
        var a = WeightedKMeans1D.Fit(x, w, 8, seed: 42);
        var b = WeightedKMeans1D.Fit(x, w, 8, seed: 42);
        Assert.Equal(a.Levels, b.Levels);
        Assert.Equal(a.Objective, b.Objective);
        for (int i = 1; i < a.Levels.Length; i++) Assert.True(a.Levels[i] > a.Levels[i - 1]);
        Assert.True(a.Levels[0] >= x.Min() && a.Levels[^1] <= x.Max());
    }

    [Theory]
    [InlineData(4)]
    [InlineData(8)]
    [InlineData(16)]
    public void WeightedBeatsUnweightedOnTheWeightedObjective(int k)
    {
        var (x, w) = Data(20000, k);
        var ones = Enumerable.Repeat(1f, x.Length).ToArray();
        var weighted = WeightedKMeans1D.Fit(x, w, k, seed: 1);
        var plain = WeightedKMeans1D.Fit(x, ones, k, seed: 1);
        double ew = WeightedKMeans1D.Objective(x, w, weighted.Levels);
        double ep = WeightedKMeans1D.Objective(x, w, plain.Levels);
        Assert.True(ew < ep * 0.9, $"weighted {ew} vs unweighted {ep}");
        // ... and the reported objective is the weighted error of its own levels.
        Assert.Equal(ew, weighted.Objective, ew * 1e-6);
        // The unweighted fit is the better one on the unweighted objective (each wins its own game).
        Assert.True(WeightedKMeans1D.Objective(x, ones, plain.Levels) <= WeightedKMeans1D.Objective(x, ones, weighted.Levels));
    }

    [Fact]
    public void FindsTheOptimumOfSmallProblems()
    {
        // Exhaustive check over every split of sorted points into 2 runs (the optimum for k = 2 in 1-D).
        var rng = new Random(3);
        for (int trial = 0; trial < 30; trial++)
        {
            int n = 3 + rng.Next(12);
            var x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var w = Enumerable.Range(0, n).Select(_ => (float)(0.1 + rng.NextDouble() * 3)).ToArray();
            var fit = WeightedKMeans1D.Fit(x, w, 2, seed: (ulong)trial, restarts: 8);
            var sorted = x.Zip(w).OrderBy(p => p.First).ToArray();
            double best = double.MaxValue;
            for (int split = 1; split < n; split++)
            {
                double cost = 0;
                foreach (var run in new[] { sorted[..split], sorted[split..] })
                {
                    double sw = run.Sum(p => p.Second), m = run.Sum(p => p.First * (double)p.Second) / sw;
                    cost += run.Sum(p => p.Second * (p.First - m) * (p.First - m));
                }
                best = Math.Min(best, cost);
            }
            Assert.True(fit.Objective <= best * (1 + 1e-6) + 1e-9, $"trial {trial}: {fit.Objective} vs optimum {best}");
        }
    }

    [Fact]
    public void HistogramFitIsCloseToTheExactFit()
    {
        var (x, w) = Data(50000, 9);
        var exact = WeightedKMeans1D.Fit(x, w, 8, seed: 5);
        var hist = new WeightedHistogram();
        for (int i = 0; i < x.Length; i++) hist.Add(x[i], w[i]);
        var binned = WeightedKMeans1D.Fit(hist.Cells(weighted: true), 8, seed: 5);
        double e1 = WeightedKMeans1D.Objective(x, w, exact.Levels), e2 = WeightedKMeans1D.Objective(x, w, binned.Levels);
        Assert.True(e2 <= e1 * 1.01, $"binned {e2} vs exact {e1}");
    }

    [Fact]
    public void FewerDistinctValuesThanLevelsStillGiveStrictLevels()
    {
        float[] x = [0.5f, 0.5f, -0.25f];
        float[] w = [1, 2, 1];
        var fit = WeightedKMeans1D.Fit(x, w, 4, seed: 0);
        for (int i = 1; i < 4; i++) Assert.True(fit.Levels[i] > fit.Levels[i - 1]);
        Assert.Equal(0, fit.Objective, 12);
    }

    [Fact]
    public void RejectsBadInput()
    {
        Assert.Throws<ArgumentException>(() => WeightedKMeans1D.Fit([1f], [0f], 2, 0));
        Assert.Throws<ArgumentException>(() => WeightedKMeans1D.Fit([1f, 2f], [1f, -1f], 2, 0));
        Assert.Throws<ArgumentException>(() => WeightedKMeans1D.Fit([1f, float.NaN], [1f, 1f], 2, 0));
    }
}
