namespace Kvq.Bench;

/// <summary>How a figure varied over repeated runs: min, median, max, and mean ± sample standard deviation (0 for one run).</summary>
public sealed record Spread(double Min, double Median, double Max, double Mean, double Sd)
{
    public static Spread Of(IReadOnlyList<double> values)
    {
        if (values.Count == 0) throw new ArgumentException("no values to summarise", nameof(values));
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        double median = n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
        double mean = sorted.Average();
        double sd = n > 1 ? Math.Sqrt(sorted.Sum(x => (x - mean) * (x - mean)) / (n - 1)) : 0;
        return new Spread(sorted[0], median, sorted[^1], mean, sd);
    }

    public override string ToString() =>
        FormattableString.Invariant($"{Mean:F1} ± {Sd:F1} (min {Min:F1}, median {Median:F1}, max {Max:F1})");
}
