using System.Collections.Concurrent;

namespace Kvq.Cache.Codecs.TurboQuant;

/// <summary>
/// The MSE-optimal scalar quantizer (Lloyd-Max) of one coordinate of a uniformly random unit vector in d dimensions,
/// which is what every coordinate of a randomly rotated vector divided by its norm looks like: density proportional to
/// (1 - x^2)^((d-3)/2) on [-1, 1] (a Beta distribution; close to N(0, 1/d) for large d). Needs no calibration: the
/// codebook depends on d and the width alone. Levels are stored scaled by sqrt(d) (unit variance). Fitted by Lloyd's
/// iteration on a fine grid of the exact density (written here: no library quantizer fits a density, only samples).
/// </summary>
public sealed class LloydMaxCodebook
{
    private static readonly ConcurrentDictionary<(int, int), LloydMaxCodebook> Cache = new();

    private LloydMaxCodebook(int dim, int bits, float[] levels)
    {
        Dim = dim;
        Bits = bits;
        Levels = levels;
        var t = new float[levels.Length - 1];
        for (int i = 0; i < t.Length; i++) t[i] = 0.5f * (levels[i] + levels[i + 1]);
        Thresholds = t;
    }

    public int Dim { get; }
    public int Bits { get; }
    /// <summary>2^Bits levels in increasing order, in units of 1/sqrt(Dim) (a coordinate u of the unit vector is coded
    /// as the level nearest sqrt(Dim) u).</summary>
    public float[] Levels { get; }
    /// <summary>Midpoints between neighbouring levels: the decision thresholds.</summary>
    public float[] Thresholds { get; }

    public static LloydMaxCodebook For(int dim, int bits)
    {
        if (dim < 2) throw new ArgumentOutOfRangeException(nameof(dim), $"a codebook needs at least 2 dimensions, not {dim}");
        if (bits < 1 || bits > 8) throw new ArgumentOutOfRangeException(nameof(bits), $"width {bits} outside 1..8");
        return Cache.GetOrAdd((dim, bits), k => Fit(k.Item1, k.Item2));
    }

    /// <summary>Index of the level nearest <paramref name="x"/> (x in level units), by the thresholds.</summary>
    public int Encode(float x)
    {
        var t = Thresholds;
        int lo = 0, hi = t.Length; // answer in [lo, hi]
        while (lo < hi)
        {
            int mid = (lo + hi) >> 1;
            if (x > t[mid]) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    private static LloydMaxCodebook Fit(int dim, int bits)
    {
        // Grid over sqrt(d) x in [-sqrt(d), sqrt(d)] with the density in that variable; 1 << 14 cells is far finer than
        // the levels' spacing at 8 bits.
        const int cells = 1 << 14;
        double r = Math.Sqrt(dim), h = 2 * r / cells;
        var xs = new double[cells];
        var ws = new double[cells];
        double e = (dim - 3) / 2.0;
        for (int i = 0; i < cells; i++)
        {
            double x = -r + (i + 0.5) * h;
            double u = x / r;
            xs[i] = x;
            ws[i] = dim == 3 ? 1 : Math.Exp(e * Math.Log(Math.Max(1e-300, 1 - u * u)));
        }
        int k = 1 << bits;
        var levels = new double[k];
        // Start from equal-probability quantiles' centres.
        double total = 0;
        foreach (var w in ws) total += w;
        {
            double acc = 0;
            int level = 0;
            for (int i = 0; i < cells && level < k; i++)
            {
                acc += ws[i];
                while (level < k && acc >= (level + 0.5) * total / k) levels[level++] = xs[i];
            }
        }
        for (int iter = 0; iter < 300; iter++)
        {
            var sum = new double[k];
            var mass = new double[k];
            int j = 0;
            for (int i = 0; i < cells; i++)
            {
                while (j + 1 < k && xs[i] > 0.5 * (levels[j] + levels[j + 1])) j++;
                sum[j] += ws[i] * xs[i];
                mass[j] += ws[i];
            }
            double moved = 0;
            for (int l = 0; l < k; l++)
                if (mass[l] > 0)
                {
                    double c = sum[l] / mass[l];
                    moved = Math.Max(moved, Math.Abs(c - levels[l]));
                    levels[l] = c;
                }
            if (moved < 1e-9) break;
        }
        // Symmetric density: average the mirrored levels so rounding leaves no bias.
        for (int l = 0; l < k / 2; l++)
        {
            double m = 0.5 * (levels[k - 1 - l] - levels[l]);
            levels[l] = -m;
            levels[k - 1 - l] = m;
        }
        var f = new float[k];
        for (int l = 0; l < k; l++) f[l] = (float)levels[l];
        return new LloydMaxCodebook(dim, bits, f);
    }
}
