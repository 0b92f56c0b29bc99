namespace Kvq.Calibration.KvQuant;

/// <summary>
/// Weighted k-means in one dimension (Lloyd's algorithm on value-sorted cells with prefix sums: clusters are runs of
/// cells, so an iteration costs O(k log cells)). Starts from weighted quantiles and from seeded k-means++ draws and keeps
/// the lowest weighted squared error; the same cells, k and seed always give the same levels.
/// </summary>
public static class WeightedKMeans1D
{
    public sealed record Result(float[] Levels, double Objective, int Iterations);

    public static Result Fit(ReadOnlySpan<float> x, ReadOnlySpan<float> w, int k, ulong seed, int restarts = 3, int maxIterations = 300) =>
        Fit(WeightedCells.FromPoints(x, w), k, seed, restarts, maxIterations);

    public static Result Fit(WeightedCells cells, int k, ulong seed, int restarts = 3, int maxIterations = 300)
    {
        if (k < 2) throw new ArgumentException($"k = {k}: need at least 2 levels");
        int n = cells.Count;
        if (n == 0) throw new ArgumentException("no values to cluster (all weights zero?)");
        var p = new Prefix(cells);
        Result? best = null;
        for (int r = 0; r <= restarts; r++)
        {
            var init = r == 0 ? QuantileInit(cells, p, k) : PlusPlusInit(cells, k, new Random(CalibrationWindows.SeedOf(seed, (ulong)r)));
            var res = Lloyd(cells, p, init, maxIterations);
            if (best == null || res.Objective < best.Objective) best = res;
        }
        return best! with { Levels = Strict(best!.Levels) };
    }

    /// <summary>Weighted squared error of nearest-level (ties to the lower) quantization of points.</summary>
    public static double Objective(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> levels)
    {
        var book = new Cache.Codecs.KvQuant.NuqCodebook(Strict(levels.ToArray()));
        double e = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double d = x[i] - book.Levels[book.Nearest(x[i])];
            e += w[i] * d * d;
        }
        return e;
    }

    private sealed class Prefix
    {
        public readonly double[] W, Wx, Wxx;   // (cells + 1)
        public Prefix(WeightedCells c)
        {
            int n = c.Count;
            W = new double[n + 1];
            Wx = new double[n + 1];
            Wxx = new double[n + 1];
            for (int i = 0; i < n; i++)
            {
                W[i + 1] = W[i] + c.W[i];
                Wx[i + 1] = Wx[i] + c.Wx[i];
                Wxx[i + 1] = Wxx[i] + c.Wxx[i];
            }
        }

        /// <summary>Weighted squared error of cells [a, b) around their weighted mean.</summary>
        public double Cost(int a, int b)
        {
            double w = W[b] - W[a];
            if (w <= 0) return 0;
            double s = Wx[b] - Wx[a];
            return Math.Max(0, Wxx[b] - Wxx[a] - s * s / w);
        }
    }

    private static double[] QuantileInit(WeightedCells c, Prefix p, int k)
    {
        var init = new double[k];
        double total = p.W[c.Count];
        int i = 0;
        for (int j = 0; j < k; j++)
        {
            double target = total * (j + 0.5) / k;
            while (i < c.Count - 1 && p.W[i + 1] < target) i++;
            init[j] = c.Mean(i);
        }
        return init;
    }

    private static double[] PlusPlusInit(WeightedCells c, int k, Random rng)
    {
        int n = c.Count;
        var init = new double[k];
        var d2 = new double[n];
        init[0] = c.Mean(Draw(c.W, rng));
        for (int i = 0; i < n; i++) { double d = c.Mean(i) - init[0]; d2[i] = d * d; }
        for (int j = 1; j < k; j++)
        {
            var score = new double[n];
            for (int i = 0; i < n; i++) score[i] = c.W[i] * d2[i];
            int pick = Draw(score, rng);
            init[j] = c.Mean(pick);
            for (int i = 0; i < n; i++) { double d = c.Mean(i) - init[j]; d2[i] = Math.Min(d2[i], d * d); }
        }
        return init;
    }

    private static int Draw(double[] weights, Random rng)
    {
        double total = 0;
        foreach (var x in weights) total += x;
        if (!(total > 0)) return rng.Next(weights.Length);
        double r = rng.NextDouble() * total, acc = 0;
        for (int i = 0; i < weights.Length; i++)
        {
            acc += weights[i];
            if (acc > r) return i;
        }
        return weights.Length - 1;
    }

    private static Result Lloyd(WeightedCells c, Prefix p, double[] centers, int maxIterations)
    {
        int k = centers.Length, n = c.Count;
        var means = new double[n];
        for (int i = 0; i < n; i++) means[i] = c.Mean(i);
        var bounds = new int[k + 1];   // cluster j = cells [bounds[j], bounds[j+1])
        int iter = 0;
        for (; iter < maxIterations; iter++)
        {
            Array.Sort(centers);
            Assign(means, centers, bounds);
            bool changed = false;
            for (int j = 0; j < k; j++)
            {
                int a = bounds[j], b = bounds[j + 1];
                double w = p.W[b] - p.W[a];
                double m;
                if (w > 0) m = (p.Wx[b] - p.Wx[a]) / w;
                else m = Reseed(means, c, centers, bounds, j);
                if (m != centers[j]) { changed = true; centers[j] = m; }
            }
            if (!changed) break;
        }
        Array.Sort(centers);
        Assign(means, centers, bounds);
        double obj = 0;
        for (int j = 0; j < k; j++)
        {
            // Error around the center itself (equal to the cluster's spread when the center is its mean).
            int a = bounds[j], b = bounds[j + 1];
            double w = p.W[b] - p.W[a], s = p.Wx[b] - p.Wx[a];
            if (w <= 0) continue;
            double mean = s / w;
            obj += p.Cost(a, b) + w * (mean - centers[j]) * (mean - centers[j]);
        }
        var levels = new float[k];
        for (int j = 0; j < k; j++) levels[j] = (float)centers[j];
        return new Result(levels, obj, iter);
    }

    /// <summary>Cells go to the nearest center by their mean (ties to the lower center, as the codecs round).</summary>
    private static void Assign(double[] means, double[] centers, int[] bounds)
    {
        int k = centers.Length;
        bounds[0] = 0;
        bounds[k] = means.Length;
        for (int j = 0; j + 1 < k; j++)
        {
            double mid = (centers[j] + centers[j + 1]) * 0.5;
            // first cell with mean > mid
            int lo = bounds[j], hi = means.Length;
            while (lo < hi)
            {
                int m = (lo + hi) >> 1;
                if (means[m] > mid) hi = m; else lo = m + 1;
            }
            bounds[j + 1] = lo;
        }
    }

    /// <summary>An empty cluster moves to the cell farthest (weighted) from its center.</summary>
    private static double Reseed(double[] means, WeightedCells c, double[] centers, int[] bounds, int empty)
    {
        int k = centers.Length, best = -1;
        double bestScore = -1;
        for (int j = 0; j < k; j++)
            for (int i = bounds[j]; i < bounds[j + 1]; i++)
            {
                double d = means[i] - centers[j];
                double s = c.W[i] * d * d;
                if (s > bestScore) { bestScore = s; best = i; }
            }
        return best < 0 || bestScore <= 0 ? centers[empty] : means[best];
    }

    /// <summary>Levels sorted and strictly increasing (coincident centers nudged apart by an ulp).</summary>
    internal static float[] Strict(float[] levels)
    {
        var l = (float[])levels.Clone();
        Array.Sort(l);
        for (int i = 1; i < l.Length; i++)
            if (!(l[i] > l[i - 1])) l[i] = MathF.BitIncrement(l[i - 1]);
        return l;
    }
}
