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

    /// <summary>Loads the profile (checking that it belongs to the model), or null when none is given.</summary>
    public static KvQuantProfile? Load(string? path, string modelFingerprint)
    {
        if (string.IsNullOrEmpty(path)) return null;
        if (!File.Exists(path)) throw new CliException($"profile not found: {path}");
        try
        {
            return KvQuantProfile.Load(path, modelFingerprint);
        }
        catch (KvProfileMismatchException e)
        {
            throw new CliException(e.Message);
        }
    }

    /// <summary>A cache config from a spec with the profile and the sink (given, else the profile's, else 0).</summary>
    public static KvCacheConfig Config(string spec, KvQuantProfile? profile, int? sink)
    {
        int s = sink ?? profile?.Settings.SinkTokens ?? 0;
        if (s < 0) throw new CliException($"--sink {s} must be >= 0");
        return KvCacheConfig.Parse(spec) with { Profile = profile, SinkTokens = s };
    }
}

/// <summary>The eval table with KVQuant's own bit accounting and the outliers the nuq codecs stored and clamped.</summary>
public static class KvQuantColumns
{
    public const string Header = "| kv | ppl | tokens | bits/element | KVQuant bits/element | KV bytes/token | outliers/element K, V | clamped K |";
    public const string Rule = "|---|---:|---:|---:|---:|---:|---:|---:|";

    /// <summary>Per side: KVQuant's accounting for nuq codecs, the stored bits for any other format; the mean of both sides.</summary>
    public static double KvQuantBits(KvCacheConfig cfg, int headDim)
    {
        double Side(Kvq.Cache.Codecs.KvSide side)
        {
            var codec = cfg.CreateCodec(side, 0, 0, headDim);
            return codec is IKvQuantAccounting a ? a.KvQuantBitsPerElement : codec.BitsPerElement;
        }
        return (Side(Kvq.Cache.Codecs.KvSide.Key) + Side(Kvq.Cache.Codecs.KvSide.Value)) / 2;
    }

    public static string Row(Kvq.Eval.PerplexityResult res, KvCacheConfig cfg, int headDim)
    {
        var k = KvQuantCounters.TotalKeys;
        var v = KvQuantCounters.TotalValues;
        string outliers = k.Elements + v.Elements == 0 ? "-" : $"{k.OutlierRate * 100:F2}%, {v.OutlierRate * 100:F2}%";
        string clamped = k.Elements == 0 ? "-" : $"{k.ClampedRate * 100:F3}%";
        return $"| {res.Kv} | {res.Ppl:F4} | {res.Tokens} | {res.BitsPerElement:F2} | {KvQuantBits(cfg, headDim):F2} | {res.KvBytesPerToken:F0} | {outliers} | {clamped} |";
    }
}
