using System.Security.Cryptography;
using System.Text;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Model;

namespace Kvq.Calibration.KvQuant;

/// <summary>How to calibrate (the settings of <c>kvq calibrate</c>).</summary>
/// <param name="Samples">Calibration windows.</param>
/// <param name="Length">Tokens per window, BOS included.</param>
/// <param name="OutlierFractions">Outlier fractions to calibrate besides 0 (dense only), e.g. 0.01.</param>
/// <param name="SinkTokens">Leading tokens of each window left out (kept exact at inference).</param>
/// <param name="Seed">Seed of the window choice and of k-means.</param>
/// <param name="Threads">Threads of the fit (the forward passes use the model's own).</param>
public sealed record KvQuantCalibrateOptions(int Samples = 16, int Length = 2048, IReadOnlyList<double>? OutlierFractions = null,
    int SinkTokens = 1, ulong Seed = 0, int Threads = 1)
{
    public IReadOnlyList<double> Fractions => OutlierFractions ?? [0.01];
}

/// <summary>Calibration end to end: windows of the text, activations (with or without Fisher weights), fit, profile.</summary>
public static class KvQuantCalibrator
{
    /// <param name="source">Forward-only (<see cref="KvActivationCollector"/>, uniform weights) or with Fisher information.</param>
    /// <param name="progress">Called with (phase, done, total); phases "forward" and "fit".</param>
    public static KvQuantProfile Calibrate(Transformer model, string text, string textName, Tokenizers.ITokenizer tokenizer,
        KvQuantCalibrateOptions options, IKvActivationSource source, bool fisher,
        Action<string, int, int>? progress = null, CancellationToken cancel = default)
    {
        var tokens = tokenizer.Encode(text, addBos: false);
        var windows = CalibrationWindows.Choose(tokens, options.Samples, options.Length, tokenizer.BosId, options.Seed);
        var acts = source.Collect(model, windows, options.SinkTokens, (d, t) => progress?.Invoke("forward", d, t), cancel);
        var fit = new KvQuantFitOptions(options.Fractions, options.Seed, options.Threads);
        var calibrations = KvQuantFitter.Fit(acts, fit, (d, t) => progress?.Invoke("fit", d, t), cancel);
        return Profile(model, options, TextHash(text), textName, fisher, calibrations);
    }

    public static KvQuantProfile Profile(Transformer model, KvQuantCalibrateOptions options, string textSha256, string textName,
        bool fisher, IReadOnlyList<KvQuantCalibration> calibrations)
    {
        var shape = model.KvShape;
        var settings = new KvQuantCalibrationSettings(textName, textSha256, options.Samples, options.Length, options.SinkTokens,
            options.Seed, fisher);
        return new KvQuantProfile(model.Weights.Fingerprint, settings, shape.Layers, shape.KvHeads, shape.HeadDim, calibrations);
    }

    public static string TextHash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}
