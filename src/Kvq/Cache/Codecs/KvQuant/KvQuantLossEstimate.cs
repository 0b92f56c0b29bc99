namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// How much a KVQuant format is expected to raise the model's loss, read from a profile's calibration errors alone (no
/// model run): each codebook's sensitivity is the Fisher-weighted squared error it leaves on the calibration data,
/// S = sum over calibration windows and elements of g^2 (dx)^2, with g the gradient of a window's mean next-token loss.
/// </summary>
/// <remarks>
/// The estimate is KVQuant's second-order one: a window's loss rises by 1/2 sum H (dx)^2, with H the diagonal of the
/// per-token Fisher, (1/N) sum_t (d l_t / dx)^2 over the window's N = length - 1 predictions. The profile keeps the
/// square of the mean loss's gradient, (1/N^2) (sum_t d l_t / dx)^2, which is H / N when the tokens' gradients are
/// uncorrelated; so the mean loss rises by about N / 2 x S / windows nats per token, and perplexity by exp of that.
/// It counts what the codebooks leave (outliers kept exact, as at inference; sink tokens left out, as they stay exact)
/// and adds keys and values of every layer. It is an estimate: <c>docs/kvquant.md</c> sets it beside measured
/// perplexity. Profiles calibrated without Fisher weights (--no-fisher) or before codebooks carried their errors give
/// none.
/// </remarks>
public static class KvQuantLossEstimate
{
    /// <summary>Estimated rise of the mean next-token loss, in nats per token, when keys and values are stored in
    /// <paramref name="spec"/> (per-layer widths for :mixed as the codecs allocate them).</summary>
    /// <exception cref="KvSpecException">The profile cannot estimate it (no Fisher weights, no errors, no calibration or
    /// codebook for the spec); the message says why.</exception>
    public static double MeanLossIncrease(KvQuantProfile profile, KvQuantSpec spec)
    {
        if (!profile.Settings.Fisher)
            throw new KvSpecException("the profile was calibrated without Fisher weights (--no-fisher): its errors say nothing " +
                                      "about the loss; run 'kvq calibrate' without --no-fisher");
        if (spec.Uniform)
            throw new KvSpecException($"'{spec.Name}': uniform levels have no calibrated codebooks to take errors from");
        var cal = profile.For(spec.OutlierFraction, spec.Name);
        double sum = 0;
        foreach (var side in new[] { KvSide.Key, KvSide.Value })
        {
            var stream = KvQuantStreams.For(side, spec);
            var bits = spec.Mixed ? MixedWidths(profile, cal, stream, spec) : Enumerable.Repeat(spec.Bits, profile.Layers).ToArray();
            for (int l = 0; l < profile.Layers; l++) sum += Sensitivity(cal, stream, l, bits[l], spec);
        }
        double predictions = Math.Max(1, profile.Settings.Length - 1);
        return 0.5 * predictions * sum / Math.Max(1, profile.Settings.Samples);
    }

    /// <summary>Estimated relative perplexity increase (0.02 = +2%): exp(<see cref="MeanLossIncrease"/>) - 1.</summary>
    public static double PerplexityIncrease(KvQuantProfile profile, KvQuantSpec spec) =>
        Math.Exp(MeanLossIncrease(profile, spec)) - 1;

    private static int[] MixedWidths(KvQuantProfile profile, KvQuantCalibration cal, KvQuantStream stream, KvQuantSpec spec)
    {
        var widths = KvQuantProfile.MixedWidths(spec.Bits);
        var sens = new double[profile.Layers][];
        for (int l = 0; l < profile.Layers; l++)
            sens[l] = [.. widths.Select(b => Sensitivity(cal, stream, l, b, spec))];
        return KvQuantBitAllocation.Allocate(sens, widths, spec.Bits);
    }

    private static double Sensitivity(KvQuantCalibration cal, KvQuantStream stream, int layer, int bits, KvQuantSpec spec)
    {
        var book = cal.Codebook(stream, layer, bits)
                   ?? throw new KvSpecException($"'{spec.Name}': the profile has no {bits}-bit codebook for {stream.Describe()} in layer {layer}");
        if (double.IsNaN(book.Sensitivity))
            throw new KvSpecException($"'{spec.Name}': the profile has no calibration errors for its codebooks (written by an older kvq); " +
                                      "run 'kvq calibrate' again");
        return book.Sensitivity;
    }
}
