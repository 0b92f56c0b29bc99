using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Calibration.KvQuant;

/// <summary>Settings of the fit that turns activations into a profile's calibrations.</summary>
/// <param name="OutlierFractions">Outlier fractions to calibrate (0 = dense only, always added).</param>
/// <param name="Seed">Seed of k-means' restarts.</param>
/// <param name="Threads">Layers fitted in parallel.</param>
/// <param name="Bins">Histogram bins on [-1, 1] that k-means runs on.</param>
/// <param name="Restarts">k-means++ restarts beside the quantile start.</param>
/// <param name="MaxIterations">k-means iterations at most.</param>
/// <param name="ValueMargin">Per-token outlier margin the histograms split at (<see cref="KvQuantSpec.ValueMargin"/>): the
/// codecs must split at the same margin for the codebooks to fit what they code.</param>
public sealed record KvQuantFitOptions(IReadOnlyList<double> OutlierFractions, ulong Seed = 0, int Threads = 1,
    int Bins = WeightedHistogram.DefaultBins, int Restarts = 3, int MaxIterations = 300,
    float ValueMargin = KvQuantSpec.ValueOutlierMargin)
{
    /// <summary>The fractions to calibrate: 0 first, then the given ones, sorted, without duplicates.</summary>
    public double[] AllFractions()
    {
        var set = new SortedSet<double> { 0 };
        foreach (var f in OutlierFractions)
        {
            if (!(f >= 0 && f < 0.5)) throw new ArgumentException($"outlier fraction {f} is outside [0, 0.5)");
            set.Add(f);
        }
        return [.. set];
    }

    /// <summary>Refuses a margin the codecs could not use (the spec's :marginM bounds).</summary>
    public void Validate()
    {
        if (!(ValueMargin > 0 && ValueMargin <= 100))
            throw new ArgumentException($"value outlier margin {ValueMargin} is outside (0, 100] half-ranges", nameof(ValueMargin));
    }
}
