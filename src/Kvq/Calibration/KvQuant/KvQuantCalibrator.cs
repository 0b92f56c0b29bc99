using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Codecs.Rotation;
using Kvq.Calibration.LowRank;
using Kvq.Model;
using Kvq.Tokenizers;

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
    /// <summary>Weight k-means by Fisher information (a backward pass per window); false: uniformly, forward passes only.</summary>
    public bool Fisher { get; init; } = true;
    /// <summary>Fit on Hadamard-rotated keys and values (each KV head over the head dim), for the nuqB:rot formats
    /// (<see cref="RotateSides"/> = both sides).</summary>
    public bool Rotate { get => RotateSides != KvRotationSides.None; init => RotateSides = value ? KvRotationSides.Both : KvRotationSides.None; }
    /// <summary>The sides fitted rotated (keys only: <c>nuqB:rot/nuqB</c>; values only: <c>nuqB/nuqB:rot</c>).</summary>
    public KvRotationSides RotateSides { get; init; }
    /// <summary>Fit plain and rotated from the same windows (one Fisher pass) and keep, per layer and side, the fit whose
    /// calibration error is lower (<see cref="KvQuantRotationChoice"/>); the profile records the choice, so plain
    /// <c>nuqB</c> specs store those layers rotated. Excludes <see cref="RotateSides"/>.</summary>
    public bool RotateAuto { get; init; }
    /// <summary>Also fit low-rank bases (every principal direction of pre-RoPE keys and of values per layer and KV head)
    /// for the lrR+FORMAT formats.</summary>
    public bool LowRank { get; init; }
    /// <summary>Ranks whose key latent gets a KVQuant calibration, for lrR+nuq* (implies <see cref="LowRank"/>).</summary>
    public IReadOnlyList<int> LatentRanks { get; init; } = [];
    /// <summary>Per-token outlier margin the value (and per-token key) codebooks are fitted at, recorded in the profile;
    /// nuq specs without <c>:marginM</c> then split at it (<see cref="KvQuantSpec.ValueMargin"/>).</summary>
    public float ValueMargin { get; init; } = KvQuantSpec.ValueOutlierMargin;
}

/// <summary>What <see cref="KvQuantCalibrator.Calibrate"/> made, and how long its two halves took.</summary>
/// <param name="Activations">Tokenizing, choosing windows and running them (forward, and backward for Fisher).</param>
/// <param name="Fit">Scales, codebooks and, when asked, low-rank bases and latent calibrations.</param>
public sealed record KvQuantCalibrationResult(KvQuantProfile Profile, TimeSpan Activations, TimeSpan Fit);

/// <summary>Calibration end to end, the one entry point of the library and of <c>kvq calibrate</c>: windows of the
/// text, activations (with or without Fisher weights, rotated or not), the KVQuant fit, optional low-rank bases and
/// latent calibrations, and the profile.</summary>
public static class KvQuantCalibrator
{
    /// <summary>The phases <see cref="Calibrate"/> reports, in order (the low-rank ones only when asked).</summary>
    public const string ForwardPhase = "forward", FisherPhase = "forward + backward (Fisher)", FitPhase = "fit scales and codebooks",
        LowRankPhase = "fit low-rank bases", LatentPhase = "fit KVQuant on the key latents",
        RotatedFitPhase = "fit rotated scales and codebooks (--rotate auto)";

    /// <param name="textName">Name of the text in the profile (a rotated fit adds <see cref="RotatedSpec.ProfileTextMarker"/>).</param>
    /// <param name="progress">Called with (phase, done, total); phases are the constants above.</param>
    public static KvQuantCalibrationResult Calibrate(Transformer model, string text, string textName, ITokenizer tokenizer,
        KvQuantCalibrateOptions options, Action<string, int, int>? progress = null, CancellationToken cancel = default)
    {
        bool lowRank = options.LowRank || options.LatentRanks.Count > 0;
        if (options.Rotate && lowRank)
            throw new ArgumentException("a rotated fit uses the rotated channels; low-rank bases need the plain ones: calibrate them apart", nameof(options));
        if (options.RotateAuto && (options.Rotate || lowRank))
            throw new ArgumentException("the automatic rotation choice fits both bases itself; it takes no rotated side and no low-rank bases", nameof(options));
        var sw = Stopwatch.StartNew();
        var tokens = tokenizer.Encode(text, addBos: false);
        var windows = CalibrationWindows.Choose(tokens, options.Samples, options.Length, tokenizer.BosId, options.Seed);
        // Fisher weights are rotated exactly (signed gradients, per window); forward-only activations have none to rotate.
        string collect = options.Fisher ? FisherPhase : ForwardPhase;
        KvActivations acts;
        KvActivations? rotatedActs = null;
        if (options.RotateAuto && options.Fisher)
            (acts, rotatedActs) = FisherActivationSource.CollectPlainAndRotated(model, windows, options.SinkTokens, (d, t) => progress?.Invoke(collect, d, t), cancel);
        else
        {
            IKvActivationSource source = options.Fisher ? new FisherActivationSource(options.RotateSides) : new KvActivationCollector();
            acts = source.Collect(model, windows, options.SinkTokens, (d, t) => progress?.Invoke(collect, d, t), cancel);
            if (options.Rotate && !options.Fisher) acts = RotatedActivations.Rotate(acts, options.RotateSides);
            if (options.RotateAuto) rotatedActs = RotatedActivations.Rotate(acts, KvRotationSides.Both);
        }
        var activations = sw.Elapsed;

        var fit = new KvQuantFitOptions(options.Fractions, options.Seed, options.Threads, ValueMargin: options.ValueMargin);
        fit.Validate();
        var calibrations = KvQuantFitter.Fit(acts, fit, (d, t) => progress?.Invoke(FitPhase, d, t), cancel);
        if (rotatedActs != null)
        {
            var rotated = KvQuantFitter.Fit(rotatedActs, fit, (d, t) => progress?.Invoke(RotatedFitPhase, d, t), cancel);
            calibrations = KvQuantRotationChoice.ChooseAndMerge(calibrations, rotated, model.KvShape.Layers);
        }
        var profile = Profile(model, options, TextHash(text), textName + RotatedSpec.ProfileMarker(options.RotateSides.HasFlag(KvRotationSides.Keys), options.RotateSides.HasFlag(KvRotationSides.Values)),
            options.Fisher, calibrations);
        if (lowRank)
        {
            var bases = LowRankFitter.Fit(acts, options.Threads, cancel);
            progress?.Invoke(LowRankPhase, 1, 1);
            if (options.LatentRanks.Count > 0)
                bases = LatentCalibration.Fit(acts, bases, options.LatentRanks, fit, (d, t) => progress?.Invoke(LatentPhase, d, t), cancel);
            profile = profile.WithLowRank(bases);
        }
        return new KvQuantCalibrationResult(profile, activations, sw.Elapsed - activations);
    }

    public static KvQuantProfile Profile(Transformer model, KvQuantCalibrateOptions options, string textSha256, string textName,
        bool fisher, IReadOnlyList<KvQuantCalibration> calibrations)
    {
        var shape = model.KvShape;
        var settings = new KvQuantCalibrationSettings(textName, textSha256, options.Samples, options.Length, options.SinkTokens,
            options.Seed, fisher, options.ValueMargin);
        return new KvQuantProfile(model.Weights.Fingerprint, settings, shape.Layers, shape.KvHeads, shape.HeadDim, calibrations);
    }

    public static string TextHash(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}
