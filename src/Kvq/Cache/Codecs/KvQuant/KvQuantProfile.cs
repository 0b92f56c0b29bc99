using Kvq.Cache.Codecs.LowRank;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// A KVQuant calibration of one model: per outlier fraction, per-channel key scales and per-layer codebooks
/// (see <see cref="KvQuantCalibration"/>). Written by <c>kvq calibrate</c>, read by the nuq codecs through
/// <see cref="KvCacheConfig.Profile"/>. File format: <see cref="KvQuantProfileFile"/>. Optionally carries the low-rank
/// bases of the same calibration run (<c>kvq calibrate --lowrank</c>), read by the lrR+FORMAT codecs.
/// </summary>
public sealed class KvQuantProfile : ILowRankProfile
{
    public string ModelFingerprint { get; }
    public KvQuantCalibrationSettings Settings { get; }
    public int Layers { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    /// <summary>Bit widths with codebooks. 1 and 5 bits are never specs of their own (nuq2..nuq4); they are there for
    /// :mixed, which gives layers the mean width plus or minus one, so one profile serves nuq2/3/4 and their :mixed.</summary>
    public static readonly int[] BitWidths = [1, 2, 3, 4, 5];

    /// <summary>The widths a :mixed spec of mean <paramref name="meanBits"/> chooses from: the mean and its neighbours.</summary>
    public static int[] MixedWidths(int meanBits) => [.. BitWidths.Where(b => Math.Abs(b - meanBits) <= 1)];
    public IReadOnlyList<KvQuantCalibration> Calibrations { get; }
    /// <summary>Principal bases of pre-RoPE keys and of values, when calibrated with --lowrank.</summary>
    public LowRankBases? LowRank { get; }

    public KvQuantProfile(string modelFingerprint, KvQuantCalibrationSettings settings, int layers, int kvHeads, int headDim,
        IReadOnlyList<KvQuantCalibration> calibrations, LowRankBases? lowRank = null)
    {
        if (lowRank != null && (lowRank.Layers != layers || lowRank.KvHeads != kvHeads || lowRank.HeadDim != headDim))
            throw new ArgumentException($"low-rank bases are ({lowRank.Layers}, {lowRank.KvHeads}, {lowRank.HeadDim}), the profile ({layers}, {kvHeads}, {headDim})");
        if (calibrations.Count == 0) throw new ArgumentException("a profile needs at least one calibration");
        foreach (var c in calibrations)
        {
            foreach (var s in new[] { c.KeysPreRope, c.KeysPostRope })
                if (s.Layers != layers || s.KvHeads != kvHeads || s.HeadDim != headDim)
                    throw new ArgumentException($"channel scales are ({s.Layers}, {s.KvHeads}, {s.HeadDim}), the profile ({layers}, {kvHeads}, {headDim})");
            foreach (var (_, l, _) in c.Codebooks)
                if (l < 0 || l >= layers) throw new ArgumentException($"codebook for layer {l} of {layers}");
        }
        ModelFingerprint = modelFingerprint;
        Settings = settings;
        Layers = layers;
        KvHeads = kvHeads;
        HeadDim = headDim;
        Calibrations = calibrations;
        LowRank = lowRank;
    }

    /// <summary>The keys' rank-R latent calibrations as a profile of head dim R (same model and settings), or null.</summary>
    public IKvProfile? LatentProfile(int rank) =>
        LowRank?.LatentCalibrations(rank) is { } cals ? new KvQuantProfile(ModelFingerprint, Settings, Layers, KvHeads, rank, cals) : null;

    /// <summary>The same profile with low-rank bases added (or replaced).</summary>
    public KvQuantProfile WithLowRank(LowRankBases lowRank) =>
        new(ModelFingerprint, Settings, Layers, KvHeads, HeadDim, Calibrations, lowRank);

    /// <summary>The calibration for an outlier fraction, or a spec error naming the ones present.</summary>
    public KvQuantCalibration For(double fraction, string spec)
    {
        foreach (var c in Calibrations)
            if (Math.Abs(c.OutlierFraction - fraction) < 1e-9) return c;
        throw new KvSpecException($"'{spec}': the profile has no calibration for {Describe(fraction)} (it has " +
            $"{string.Join(", ", Calibrations.Select(c => Describe(c.OutlierFraction)))}); recalibrate with --outliers {KvQuantSpec.FormatFraction(fraction)}");
    }

    private static string Describe(double f) => f == 0 ? "no outliers" : $"{KvQuantSpec.FormatFraction(f)} outliers";

    /// <summary>Throws <see cref="KvProfileMismatchException"/> unless the profile belongs to the model.</summary>
    public void EnsureModel(string modelFingerprint, string path = "profile")
    {
        if (!string.Equals(modelFingerprint, ModelFingerprint, StringComparison.Ordinal))
            throw new KvProfileMismatchException(path, ModelFingerprint, modelFingerprint);
    }

    public void Save(string path) => KvQuantProfileFile.Write(this, path);

    /// <summary>Reads a profile; with <paramref name="modelFingerprint"/>, also checks that it belongs to that model.</summary>
    public static KvQuantProfile Load(string path, string? modelFingerprint = null)
    {
        var p = KvQuantProfileFile.Read(path);
        if (modelFingerprint != null) p.EnsureModel(modelFingerprint, path);
        return p;
    }
}
