namespace Kvq.Calibration.KvQuant;

/// <summary>
/// A fine histogram of normalized values on [-1, 1]: per bin, the count, sum and sum of squares, unweighted and
/// weighted. K-means runs on its bins (each bin a point mass at its weighted mean, its spread kept in the objective),
/// which makes fitting a codebook independent of the number of calibration values. At 2^16 bins a bin is 3e-5 wide,
/// far below any level spacing of a 4-bit codebook.
/// </summary>
public sealed class WeightedHistogram
{
    public const int DefaultBins = 1 << 16;
    public int Bins { get; }
    internal readonly double[] N, Sx, Sxx, W, Wx, Wxx;

    public WeightedHistogram(int bins = DefaultBins)
    {
        if (bins < 2) throw new ArgumentException($"{bins} bins");
        Bins = bins;
        N = new double[bins];
        Sx = new double[bins];
        Sxx = new double[bins];
        W = new double[bins];
        Wx = new double[bins];
        Wxx = new double[bins];
    }

    public long Count { get; private set; }
    public double TotalWeight { get; private set; }

    /// <summary>Adds a value in [-1, 1] (clamped) with weight w &gt;= 0.</summary>
    public void Add(float u, double w)
    {
        u = Math.Clamp(u, -1f, 1f);
        int b = (int)((u + 1f) * 0.5f * Bins);
        if (b >= Bins) b = Bins - 1;
        if (b < 0) b = 0;
        N[b] += 1;
        Sx[b] += u;
        Sxx[b] += (double)u * u;
        W[b] += w;
        Wx[b] += w * u;
        Wxx[b] += w * u * u;
        Count++;
        TotalWeight += w;
    }

    /// <summary>Adds another histogram's contents.</summary>
    public void Add(WeightedHistogram other)
    {
        if (other.Bins != Bins) throw new ArgumentException("histograms of different bin counts");
        for (int b = 0; b < Bins; b++)
        {
            N[b] += other.N[b]; Sx[b] += other.Sx[b]; Sxx[b] += other.Sxx[b];
            W[b] += other.W[b]; Wx[b] += other.Wx[b]; Wxx[b] += other.Wxx[b];
        }
        Count += other.Count;
        TotalWeight += other.TotalWeight;
    }

    /// <summary>Non-empty bins as k-means cells (sum of weights, weighted sum, weighted sum of squares), in value order.
    /// Unweighted when <paramref name="weighted"/> is false or every weight is zero.</summary>
    public WeightedCells Cells(bool weighted)
    {
        bool useW = weighted && TotalWeight > 0;
        var w = useW ? W : N;
        var wx = useW ? Wx : Sx;
        var wxx = useW ? Wxx : Sxx;
        int n = 0;
        for (int b = 0; b < Bins; b++) if (w[b] > 0) n++;
        var cw = new double[n];
        var cx = new double[n];
        var cxx = new double[n];
        int i = 0;
        for (int b = 0; b < Bins; b++)
        {
            if (!(w[b] > 0)) continue;
            cw[i] = w[b];
            cx[i] = wx[b];
            cxx[i] = wxx[b];
            i++;
        }
        return new WeightedCells(cw, cx, cxx);
    }

    /// <summary>Q-Norm (unweighted, over the values added): scale = std(u)/std(Q(u)), offset = mean(u) - mean(Q(u)) * scale,
    /// with Q the nearest level (each bin assigned by its mean).</summary>
    public (float Scale, float Offset) QNorm(Cache.Codecs.KvQuant.NuqCodebook book)
    {
        double n = 0, s = 0, ss = 0, qs = 0, qss = 0;
        for (int b = 0; b < Bins; b++)
        {
            if (N[b] == 0) continue;
            n += N[b];
            s += Sx[b];
            ss += Sxx[b];
            double q = book.Levels[book.Nearest((float)(Sx[b] / N[b]))];
            qs += N[b] * q;
            qss += N[b] * q * q;
        }
        if (n == 0) return (1f, 0f);
        double m1 = s / n, m2 = qs / n;
        double v1 = Math.Max(0, ss / n - m1 * m1), v2 = Math.Max(0, qss / n - m2 * m2);
        if (v1 <= 0 || v2 <= 0) return (1f, 0f);
        double scale = Math.Sqrt(v1 / v2);
        return ((float)scale, (float)(m1 - m2 * scale));
    }
}

/// <summary>Weighted 1-D points sorted by value: weight, weighted sum and weighted sum of squares of each cell.</summary>
public sealed record WeightedCells(double[] W, double[] Wx, double[] Wxx)
{
    public int Count => W.Length;
    public double Mean(int i) => Wx[i] / W[i];

    /// <summary>One cell per distinct value of (x, w) (zero weights dropped).</summary>
    public static WeightedCells FromPoints(ReadOnlySpan<float> x, ReadOnlySpan<float> w)
    {
        if (x.Length != w.Length) throw new ArgumentException($"{x.Length} values but {w.Length} weights");
        var xs = x.ToArray();
        var ws = w.ToArray();
        foreach (var v in ws) if (!(v >= 0) || !float.IsFinite(v)) throw new ArgumentException($"weight {v}: weights must be finite and >= 0");
        foreach (var v in xs) if (!float.IsFinite(v)) throw new ArgumentException($"value {v} is not finite");
        Array.Sort(xs, ws);
        var cw = new List<double>();
        var cx = new List<double>();
        var cxx = new List<double>();
        float last = float.NaN;
        for (int i = 0; i < xs.Length; i++)
        {
            if (ws[i] == 0) continue;
            double wi = ws[i], xi = xs[i];
            bool same = cw.Count > 0 && xs[i] == last;
            last = xs[i];
            if (same)
            {
                cw[^1] += wi; cx[^1] += wi * xi; cxx[^1] += wi * xi * xi;
            }
            else
            {
                cw.Add(wi); cx.Add(wi * xi); cxx.Add(wi * xi * xi);
            }
        }
        return new WeightedCells([.. cw], [.. cx], [.. cxx]);
    }
}
