using System.CommandLine;
using Kvq.Cache;

namespace Kvq.Cli.Commands.Eval;

/// <summary>
/// The options every `kvq eval` subcommand shares, defined once: model, KV grid, threads, JSON, report folder,
/// (for those that read a book) the text, and (for those that run the model) the device. A cache option that applies to every spec (e.g. a calibration profile) goes
/// here: add it in <see cref="AddTo"/> and apply it in <see cref="Configs"/>.
/// </summary>
public sealed class EvalOptions
{
    public ModelOptions Model { get; } = new();
    public Option<string?> Text { get; }
    public Option<string> Kv { get; }
    public Option<int> Threads { get; } = CommonOptions.Threads();
    public Option<bool> Json { get; } = CommonOptions.Json();
    public Option<string?> Profile { get; } = KvProfileOptions.Profile();
    public Option<double?> MaxPplIncrease { get; } = KvAuto.MaxPplIncrease();
    public Option<int?> Sink { get; } = KvProfileOptions.Sink();
    public KvPolicyOptions Policy { get; } = new(grid: true);
    public KvOffloadOptions Offload { get; } = new(grid: true);
    public KvSlidingOption Sliding { get; } = new();
    /// <summary>--device and --device-weights; null for a measure that runs no model (memory).</summary>
    public DeviceOptions? Device { get; }
    public Option<string?> Report { get; } = new("--report")
    {
        Description = "also write a report folder: table.md, results.jsonl, run.json, PNG plots, index.md and index.html",
    };
    private readonly bool _usesText;

    /// <param name="text">Whether the command reads a text; <paramref name="textRequired"/>: no default text.</param>
    /// <param name="device">Whether the command runs the model (and so takes --device).</param>
    public EvalOptions(string defaultKv, bool text = true, bool textRequired = false, bool device = true)
    {
        _usesText = text;
        Device = device ? new DeviceOptions() : null;
        Kv = new Option<string>("--kv")
        {
            Description = "comma-separated KV specs to compare (a grid): NAME or KEYS/VALUES, e.g. f16,q8_0,q4_0,kivi2 (kvq eval --list); " +
                          "auto: the smallest calibrated format within --max-ppl-increase",
            DefaultValueFactory = _ => defaultKv,
        };
        Text = new Option<string?>("--text")
        {
            Description = textRequired ? "UTF-8 text file (BOM dropped, CRLF -> LF)"
                : "UTF-8 text file (BOM dropped, CRLF -> LF); default: ../shared/text/books/pg2489_moby_dick.txt",
            Required = textRequired,
        };
    }

    public void AddTo(Command cmd)
    {
        Model.AddTo(cmd);
        if (_usesText) cmd.Add(Text);
        cmd.Add(Kv);
        cmd.Add(Threads);
        cmd.Add(Json);
        cmd.Add(Profile);
        cmd.Add(MaxPplIncrease);
        cmd.Add(Sink);
        Policy.AddTo(cmd);
        Offload.AddTo(cmd);
        Sliding.AddTo(cmd);
        Device?.AddTo(cmd);
        cmd.Add(Report);
    }

    /// <summary>The specs of --kv with --profile (checked against the model's fingerprint) and --sink applied, each
    /// crossed with every --policy (not yet checked against the model's shape: <see cref="EvalRun"/> does that).</summary>
    public IReadOnlyList<KvCacheConfig> Configs(ParseResult r, string modelFingerprint, int? contextTokens = null)
    {
        var specs = (r.GetValue(Kv) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (specs.Length == 0) throw new CliException("--kv: no KV spec given");
        var profile = KvProfileOptions.Load(r.GetValue(Profile), modelFingerprint);
        var policies = Policy.Parse(r);
        var configs = new List<KvCacheConfig>(specs.Length * policies.Count);
        var offloads = Offload.Parse(r);
        foreach (var s in specs)
        {
            var config = Sliding.Apply(r, Offload.WithDir(r, KvProfileOptions.Config(s, profile, r.GetValue(Sink), KvAuto.Is(s) ? r.GetValue(MaxPplIncrease) : null, contextTokens)));
            configs.AddRange(KvPolicyOptions.Cross(config, policies));
            foreach (var o in offloads) configs.Add(config with { Offload = o });
        }
        return configs;
    }

    /// <summary>Fails fast on malformed --kv, --policy, --device and --sliding (and its conflicts) before the model is loaded; the device to use.</summary>
    public DeviceChoice CheckSpecs(ParseResult r)
    {
        var specs = (r.GetValue(Kv) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var s in specs)
            if (!KvAuto.Is(s)) KvCacheConfig.Parse(s);
        if (r.GetValue(MaxPplIncrease) != null && !specs.Any(KvAuto.Is))
            throw new CliException("--max-ppl-increase bounds the format --kv auto picks; add auto to --kv");
        var policies = Policy.Parse(r);
        var device = Device?.Parse(r, policies) ?? DeviceChoice.Cpu;
        if (Offload.Parse(r).Count > 0 && device.Cuda) throw new CliException("--offload-budget runs on the host cache: use --device cpu");
        Sliding.Check(r, policies, Offload.Parse(r).Count > 0, r.GetValue(Sink), device.Cuda);
        return device;
    }
}
