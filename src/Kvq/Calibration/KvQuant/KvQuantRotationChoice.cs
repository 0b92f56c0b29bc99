using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Calibration.KvQuant;

/// <summary>
/// The per-layer rotation choice of <c>kvq calibrate --rotate auto</c>: given a plain fit and a fit of the same windows
/// in the Walsh-Hadamard-rotated basis (with the rotated coordinates' own Fisher weights, so the two fits' calibration
/// errors estimate the same loss), each (layer, side) is stored rotated where rotation lowers its error, and the merged
/// calibration takes that layer's scales and codebooks from the fit it chose.
/// <para>Criterion (<see cref="Score"/>): the mean over the profile's widths (1..5 bits) of ln(rotated error / plain
/// error) of the layer's codebook: keys' pre-RoPE per-channel codebooks, values' per-token ones. Rotate when it is
/// below 0, i.e. when the geometric mean of the ratios is below 1. A log mean rather than a sum of errors because the
/// errors of different widths differ by orders of magnitude (a sum would be the 1-bit codebook's alone), and the
/// choice must serve every width: one profile serves nuq2/3/4 and their <c>:mixed</c>. The errors are the codebooks'
/// sensitivities, KVQuant's second-order loss estimate on the calibration text; measured on books-19m they rank the
/// (side, layer) cells as the measured KL does (docs/kvquant.md, "Round 4" and "Round 5").</para>
/// </summary>
public static class KvQuantRotationChoice
{
    /// <summary>The stream whose errors decide a side: the default key stream (per channel, pre-RoPE) or the values'.</summary>
    public static KvQuantStream StreamOf(KvSide side) => side == KvSide.Key ? KvQuantStream.KeyChannelPreRope : KvQuantStream.Value;

    /// <summary>Mean over the widths both fits hold of ln(rotated / plain error); NaN when no width has two finite
    /// positive errors (then the layer stays plain).</summary>
    public static double Score(KvQuantCalibration plain, KvQuantCalibration rotated, KvSide side, int layer)
    {
        var stream = StreamOf(side);
        double sum = 0;
        int n = 0;
        foreach (int bits in KvQuantProfile.BitWidths)
        {
            double a = plain.Codebook(stream, layer, bits)?.Sensitivity ?? double.NaN;
            double b = rotated.Codebook(stream, layer, bits)?.Sensitivity ?? double.NaN;
            if (!(a > 0) || !(b > 0) || double.IsInfinity(a) || double.IsInfinity(b)) continue;
            sum += Math.Log(b / a);
            n++;
        }
        return n == 0 ? double.NaN : sum / n;
    }

    /// <summary>The layers of <paramref name="side"/> to store rotated: those whose <see cref="Score"/> is below 0.</summary>
    public static int[] Choose(KvQuantCalibration plain, KvQuantCalibration rotated, KvSide side, int layers) =>
        [.. Enumerable.Range(0, layers).Where(l => Score(plain, rotated, side, l) < 0)];

    /// <summary>One calibration with the chosen layers' key scales (pre- and post-RoPE) and key codebooks (every key
    /// stream), or value codebooks, from <paramref name="rotated"/>, the rest from <paramref name="plain"/>, and the
    /// chosen layers marked rotated.</summary>
    public static KvQuantCalibration Merge(KvQuantCalibration plain, KvQuantCalibration rotated, IReadOnlyCollection<int> keyLayers,
        IReadOnlyCollection<int> valueLayers)
    {
        if (Math.Abs(plain.OutlierFraction - rotated.OutlierFraction) > 1e-9)
            throw new ArgumentException($"outlier fractions differ: {plain.OutlierFraction} and {rotated.OutlierFraction}");
        bool FromRotated(KvQuantStream s, int layer) => s == KvQuantStream.Value ? valueLayers.Contains(layer) : keyLayers.Contains(layer);
        var books = plain.Codebooks.Where(c => !FromRotated(c.Stream, c.Layer))
            .Concat(rotated.Codebooks.Where(c => FromRotated(c.Stream, c.Layer)));
        return new KvQuantCalibration(plain.OutlierFraction, MixScales(plain.KeysPreRope, rotated.KeysPreRope, keyLayers),
            MixScales(plain.KeysPostRope, rotated.KeysPostRope, keyLayers), books, keyLayers, valueLayers);
    }

    /// <summary>Every calibration of <paramref name="plain"/> merged with the rotated fit of the same fraction, each
    /// with its own choice.</summary>
    public static List<KvQuantCalibration> ChooseAndMerge(IReadOnlyList<KvQuantCalibration> plain, IReadOnlyList<KvQuantCalibration> rotated, int layers)
    {
        var merged = new List<KvQuantCalibration>(plain.Count);
        foreach (var p in plain)
        {
            var r = rotated.FirstOrDefault(c => Math.Abs(c.OutlierFraction - p.OutlierFraction) < 1e-9)
                    ?? throw new ArgumentException($"the rotated fit has no calibration for outlier fraction {p.OutlierFraction}");
            merged.Add(Merge(p, r, Choose(p, r, KvSide.Key, layers), Choose(p, r, KvSide.Value, layers)));
        }
        return merged;
    }

    private static ChannelScales MixScales(ChannelScales plain, ChannelScales rotated, IReadOnlyCollection<int> layers)
    {
        var zero = (float[])plain.Zero.Clone();
        var range = (float[])plain.Range.Clone();
        int per = plain.KvHeads * plain.HeadDim;
        foreach (int l in layers)
        {
            Array.Copy(rotated.Zero, l * per, zero, l * per, per);
            Array.Copy(rotated.Range, l * per, range, l * per, per);
        }
        return new ChannelScales(plain.Layers, plain.KvHeads, plain.HeadDim, zero, range);
    }
}
