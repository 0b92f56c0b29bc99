using System.CommandLine;
using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Cli.Commands;

/// <summary>--profile and --sink for commands that build a KV cache: calibrated formats (nuq*) read the profile, and
/// the sink defaults to what the profile was calibrated with.</summary>
public static class KvProfileOptions
{
    public static Option<string?> Profile() => new("--profile")
    {
        Description = "calibration profile from 'kvq calibrate' (needed by nuq2/nuq3/nuq4, and by lrR+FORMAT when calibrated with --lowrank)",
    };

    public static Option<int?> Sink() => new("--sink")
    {
        Description = "leading tokens kept as exact f16 copies (attention sinks); default: the profile's, else 0",
    };

    /// <summary>Reads the profile without checking its model, or null when none is given. <c>inspect</c> reads it
    /// before printing anything, so a missing or unreadable one is one line, not half a table and then the error;
    /// <see cref="EnsureModel"/> checks the model once it is loaded.</summary>
    public static KvQuantProfile? Read(string? path)
    {
        if (string.IsNullOrEmpty(path)) return null;
        if (Directory.Exists(path)) throw new CliException($"--profile {path} is a directory: give the file 'kvq calibrate --out' wrote");
        if (!File.Exists(path)) throw new CliException($"profile not found: {path}");
        return KvQuantProfile.Load(path);
    }

    /// <summary><paramref name="profile"/> (read from <paramref name="path"/>) if it belongs to the model; a
    /// <see cref="CliException"/> if not.</summary>
    public static KvQuantProfile? EnsureModel(KvQuantProfile? profile, string? path, string modelFingerprint)
    {
        try
        {
            profile?.EnsureModel(modelFingerprint, path!);
            return profile;
        }
        catch (KvProfileMismatchException e)
        {
            throw new CliException(e.Message);
        }
    }

    /// <summary>Loads the profile (checking that it belongs to the model), or null when none is given.</summary>
    public static KvQuantProfile? Load(string? path, string modelFingerprint) => EnsureModel(Read(path), path, modelFingerprint);

    /// <summary>A cache config from a spec with the profile and the sink (given, else the profile's, else 0). The spec
    /// <c>auto</c> is the smallest format within <paramref name="maxPplIncrease"/> (<see cref="KvAuto"/>), printed with
    /// the reason to standard error. A sink longer than <paramref name="contextTokens"/> (the model's trained context) is
    /// refused: sink tokens are the first tokens of a sequence, and a huge one overflowed the sink bank's size (an
    /// unhandled OverflowException) or reserved gigabytes for copies of tokens that never come.</summary>
    public static KvCacheConfig Config(string spec, KvQuantProfile? profile, int? sink, double? maxPplIncrease = null, int? contextTokens = null)
    {
        int s = sink ?? profile?.Settings.SinkTokens ?? 0;
        if (s < 0) throw new CliException($"--sink {s} must be >= 0");
        if (contextTokens is { } ctx && s > ctx)
            throw new CliException($"--sink {s} is longer than the model's context ({ctx} tokens): sink tokens are a sequence's first tokens; give at most {ctx}");
        if (KvAuto.Is(spec))
        {
            var choice = KvAuto.Choose(profile, maxPplIncrease);
            Console.Error.WriteLine(choice.Explain(profile!));
            spec = choice.Chosen.Spec;
        }
        else if (maxPplIncrease != null)
            throw new CliException($"--max-ppl-increase bounds the format --kv auto picks; --kv {spec} names one");
        return KvCacheConfig.Parse(spec) with { Profile = profile, SinkTokens = s };
    }
}

/// <summary>The eval table with KVQuant's own bit accounting and the outliers the nuq codecs stored and clamped.</summary>
public static class KvQuantColumns
{

    /// <summary>Per side: KVQuant's accounting for nuq codecs, the stored bits for any other format; the mean of both
    /// sides and of the layers (which differ under :mixed).</summary>
    public static double KvQuantBits(KvCacheConfig cfg, int headDim, int layers)
    {
        double Side(Cache.Codecs.KvSide side, int layer)
        {
            var codec = cfg.CreateCodec(side, layer, 0, headDim);
            return codec is IKvQuantAccounting a ? a.KvQuantBitsPerElement : codec.BitsPerElement;
        }
        double sum = 0;
        for (int l = 0; l < layers; l++) sum += Side(Cache.Codecs.KvSide.Key, l) + Side(Cache.Codecs.KvSide.Value, l);
        return sum / (2.0 * layers);
    }

    /// <summary>The config's accounting with the outliers the evaluated sequences stored (<paramref name="result"/>'s own
    /// counts: rows measured one after another, or at the same time, each report theirs).</summary>
    public static Kvq.Eval.KvQuantStats Stats(KvCacheConfig cfg, int headDim, int layers, Kvq.Eval.PerplexityResult result) =>
        new(KvQuantBits(cfg, headDim, layers), result.KeyOutliers.OutlierRate, result.ValueOutliers.OutlierRate);
}
