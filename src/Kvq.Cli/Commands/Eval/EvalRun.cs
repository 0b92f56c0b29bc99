using System.CommandLine;
using Kvq.Bench;
using Kvq.Cache;
using Kvq.Cli.Validation;
using Kvq.Model;
using Kvq.Text;

namespace Kvq.Cli.Commands.Eval;

/// <summary>
/// One `kvq eval` run: the model (on the CPU or a CUDA device), the text's tokens, the checked KV specs, Ctrl-C as a
/// cancellation token, and the output (stdout table or JSON rows, plus the report folder). Arguments are checked before
/// any long work starts so a user error is one line and exit code 2.
/// </summary>
public sealed class EvalRun : IDisposable
{
    public const int ExitCancelled = 130;

    private readonly CancellationTokenSource _cts = new();
    private readonly ConsoleCancelEventHandler _onCtrlC;

    public string Command { get; }
    public LoadedModel Loaded { get; }
    public string ModelPath { get; }
    public ILanguageModel Model { get; }
    public DeviceChoice Device { get; }
    public string? TextPath { get; }
    public int[] TextTokens { get; } = [];
    public IReadOnlyList<KvCacheConfig> Configs { get; }
    public int Threads => Model.Threads;
    private readonly int _threadsOption;
    public EvalOutput Output { get; }
    /// <summary>Settings of this measure (ctx, windows, lengths, ...), in the order they are printed.</summary>
    public List<(string Name, string Value)> Settings { get; } = [];
    public CancellationToken Cancel => _cts.Token;
    public bool Cancelled => _cts.IsCancellationRequested;

    private EvalRun(string command, ParseResult r, EvalOptions o, bool readText, bool tokenize)
    {
        Command = command;
        Device = o.CheckSpecs(r);
        _threadsOption = r.GetValue(o.Threads);
        ModelPath = o.Model.Path(r);
        if (readText)
        {
            TextPath = r.GetValue(o.Text) ?? DefaultPaths.ResolveText(DefaultPaths.DefaultBookFile);
            TextInput.Check(TextPath, "--text", Console.Error);
        }
        var report = r.GetValue(o.Report);
        if (report != null && File.Exists(report)) throw new CliException($"--report {report}: a file of that name exists (give a folder)");
        if (report != null) PlotSupport.Ensure("--report");
        Loaded = ModelOptions.Load(ModelPath, r.GetValue(o.Model.Tokenizer));
        try
        {
            Configs = o.Configs(r, Loaded.Weights.Fingerprint, Loaded.Weights.Config.ContextLength);
            Model = LoadModel(Loaded.Weights);
            foreach (var c in Configs)
            {
                try
                {
                    DeviceChoice.Check(Model, c); // unknown names, values in a key-only format, the model's shape
                }
                catch (KvSpecException e) when (r.GetResult(o.Kv) is null or { Implicit: true })
                {
                    // The user gave no --kv: say the spec came from this command's default grid.
                    throw new CliException($"--kv {c.Name} (from this command's default --kv {r.GetValue(o.Kv)}): {e.Message}; give --kv to choose the specs");
                }
            }
            if (readText && tokenize) TextTokens = Loaded.Tokenizer.Encode(TextNormalizer.ReadNormalized(TextPath!), addBos: false);
        }
        catch
        {
            (Model as IDisposable)?.Dispose();
            Loaded.Dispose();
            throw;
        }
        Output = new EvalOutput(r.GetValue(o.Json), report == null ? null : new EvalReport(report));
        _onCtrlC = (_, e) =>
        {
            if (_cts.IsCancellationRequested) return; // a second Ctrl-C ends the process at once
            e.Cancel = true; // the first finishes the current window or prompt and keeps what is done
            _cts.Cancel();
        };
        Console.CancelKeyPress += _onCtrlC;
    }

    /// <param name="readText">Whether the measure reads --text (checked to exist); <paramref name="tokenize"/>: into <see cref="TextTokens"/>.</param>
    public static EvalRun Open(string command, ParseResult r, EvalOptions o, bool readText, bool tokenize = true) =>
        new(command, r, o, readText, tokenize);

    /// <summary>A model of other weights (a reference) on the same device with the same threads; dispose it if IDisposable.</summary>
    public ILanguageModel LoadModel(ModelWeights weights) => Device.Load(weights, _threadsOption);

    /// <summary>Windows longer than the model's context are a user error (positions it never saw, and ctx x vocab logits).</summary>
    public void CheckContext(int ctx)
    {
        ContextOption.Check("--ctx", ctx, Model.Config);
    }

    /// <summary>"model X (fingerprint), text T, settings..., device cpu, N threads": the first line of the table and of the report.</summary>
    public string HeaderLine()
    {
        var parts = new List<string> { $"model {Path.GetFileName(ModelPath)} ({Loaded.Weights.Fingerprint})" };
        if (TextPath != null) parts.Add($"text {Path.GetFileName(TextPath)}");
        foreach (var (n, v) in Settings) parts.Add($"{n} {v}");
        parts.Add($"device {Model.Device}");
        return string.Join(", ", parts);
    }

    /// <summary>Everything the report states about how the numbers were measured.</summary>
    public IReadOnlyList<(string Name, string Value)> Describe()
    {
        var w = Loaded.Weights;
        var list = new List<(string, string)>
        {
            ("command", "kvq " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1))),
            ("measure", Command),
            ("model", $"{Path.GetFullPath(ModelPath)} (fingerprint {w.Fingerprint})"),
            ("model shape", $"{w.Config.Architecture}, {w.Config.Layers} layers, {w.Config.KvHeads} KV heads x head dim {w.Config.HeadDim}, context {w.Config.ContextLength}"),
            ("weights", $"{w.WeightBytes:N0} bytes ({w.ParameterCount:N0} parameters)"),
        };
        if (TextPath != null)
            list.Add(("text", $"{Path.GetFullPath(TextPath)} (BOM dropped, CRLF -> LF" +
                              (TextTokens.Length > 0 ? $"; {TextTokens.Length:N0} tokens by the model's tokenizer)" : ")")));
        foreach (var s in Settings) list.Add(s);
        list.Add(("kv specs", string.Join(", ", Configs.Select(c => c.Name))));
        list.Add(("threads", Threads.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        list.Add(("device", Model.Device));
        list.Add(("machine", MachineInfo.Describe()));
        list.Add(("kvq", KvqInfo.InformationalVersion));
        list.Add(("date", DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", System.Globalization.CultureInfo.InvariantCulture)));
        return list;
    }

    /// <summary>Runs one unit (a spec) under the progress bar; null when Ctrl-C stopped it before anything was done.</summary>
    public T? Measure<T>(string title, Func<Action<int, int>, CancellationToken, T> work) where T : class
    {
        if (Cancelled) return null;
        try
        {
            return Progress.Run(title, p => work(p, Cancel));
        }
        catch (OperationCanceledException) when (Cancelled)
        {
            return null;
        }
    }

    /// <summary>Writes the report (if asked) and says whether Ctrl-C cut the run short; the exit code.</summary>
    public int Finish()
    {
        if (Cancelled)
        {
            Output.Markdown("");
            Output.Markdown("Stopped by Ctrl-C: rows cover the work finished; the last may cover only part of it (see its windows, samples or trials).");
        }
        Output.Finish(this);
        if (!Cancelled) return 0;
        Console.Error.WriteLine($"kvq: stopped by Ctrl-C; kept {Output.Rows} finished row(s)" +
                                (Output.ReportFolder is { } f ? $" in {f}" : ""));
        return ExitCancelled;
    }

    public void Dispose()
    {
        Console.CancelKeyPress -= _onCtrlC;
        _cts.Dispose();
        (Model as IDisposable)?.Dispose();
        Loaded.Dispose();
    }
}
