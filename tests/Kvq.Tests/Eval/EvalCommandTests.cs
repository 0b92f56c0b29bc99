using System.Text.Json;
using Kvq.Cli.Commands.Eval;

namespace Kvq.Tests.Eval;

/// <summary>Console redirection is process-wide: CLI tests run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ConsoleCollection
{
    public const string Name = "console";
}

/// <summary>`kvq eval` run in process through Program.Main: exit codes, one-line errors, JSON rows, the report folder.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class EvalCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-eval-test-").FullName;
    private string Stories => Fixtures.StoriesGguf;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string StoriesText(int chars)
    {
        var path = Path.Combine(_dir, $"stories{chars}.txt");
        File.WriteAllText(path, TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..chars]);
        return path;
    }

    [Fact]
    public void BadArgumentsAreOneLineAndExitCode2()
    {
        string text = StoriesText(3000);
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", text, "--kv", "f16,nope"), "unknown KV format 'nope'");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", Path.Combine(_dir, "missing.txt")), "text file not found");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "ppl", "-m", Path.Combine(_dir, "missing.gguf"), "--text", text), "model not found");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", text, "--ctx", "2000"), "longer than the text");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "kl", "-m", Stories, "--text", text, "--kv", "f16", "--ctx", "4096"), "longer than the model's context");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", text, "--ctx", "128", "--stride", "200"), "--stride 200");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "recall", "-m", Stories, "--text", text, "--kv", "f16", "--filler", "1500"), "too short");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "recall", "-m", Stories, "--text", text, "--kv", "f16", "--filler", "100,x"), "--filler: 'x'");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "passkey", "-m", Stories, "--kv", "f16", "--lengths", "100000"), "longer than the model's context");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "needle", "-m", Stories, "--text", text, "--kv", "f16", "--depths", "1.5"), "--depths: '1.5'");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "memory", "-m", Stories, "--kv", "f16/int4-bad"), "unknown KV format 'int4-bad'");
        InProcessCli.AssertUserError(InProcessCli.Run("eval"), "needs a subcommand");
        // A spec of the default grid that the model's shape refuses (q8_0 at stories260K's head dim 8) says it came
        // from the default; the same spec given by the user is named as given.
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "recall", "-m", Stories, "--text", text, "--filler", "100"),
            "--kv q8_0 (from this command's default --kv f16,q8_0,q4_0): q8_0 stores groups of 32");
        var given = InProcessCli.Run("eval", "recall", "-m", Stories, "--text", text, "--filler", "100", "--kv", "q8_0");
        InProcessCli.AssertUserError(given, "q8_0 stores groups of 32");
        Assert.DoesNotContain("default", given.Err);
        Assert.Equal(2, InProcessCli.Run("eval", "ppl", "--no-such-option").Code);
    }

    [Fact]
    public void PasskeyThatNoFormatAnswersSaysTheModelIsWhy()
    {
        // stories260K cannot retrieve a 5-digit key at any length: every format scores 0, and the CLI says why.
        var r = InProcessCli.Run("eval", "passkey", "-m", Stories, "--kv", "f16,int4", "--lengths", "250", "--depths", "0.5", "--trials", "1");
        Assert.Equal(0, r.Code);
        Assert.Contains("| f16 | 0.0% |", r.Out);
        Assert.Contains("kvq: note: no format answered any passkey prompt exactly", r.Err);
        Assert.Contains("the model (stories260K.gguf) cannot do this task", r.Err);
    }

    [Fact]
    public void ListPrintsTheRegisteredFormats()
    {
        var r = InProcessCli.Run("eval", "--list");
        Assert.Equal(0, r.Code);
        foreach (var (name, _) in Kvq.Cache.Codecs.KvCodecRegistry.Formats) Assert.Contains($"  {name} ", r.Out);
    }

    [Fact]
    public void PplJsonRowsKeepTheirFieldNames()
    {
        var r = InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", StoriesText(20_000), "--ctx", "128", "--windows", "2", "--kv", "f32,int8", "-t", "2", "--json");
        Assert.Equal(0, r.Code);
        var rows = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["f32", "int8"], rows.Select(x => x.GetProperty("kv").GetString()));
        foreach (var x in rows)
        {
            Assert.True(x.GetProperty("ppl").GetDouble() > 1);
            Assert.Equal(254, x.GetProperty("tokens").GetInt64());
            Assert.True(x.GetProperty("bits_per_element").GetDouble() > 8);
            Assert.True(x.GetProperty("kv_bytes_per_token").GetDouble() > 0);
        }
    }

    [Fact]
    public void KlRowsCarryTailPercentilesAndTheF16Reference()
    {
        var r = InProcessCli.Run("eval", "kl", "-m", Stories, "--text", StoriesText(20_000), "--ctx", "128", "--windows", "2", "--kv", "f16,int4:rot", "-t", "2", "--json");
        Assert.Equal(0, r.Code);
        var rows = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["f16", "int4:rot"], rows.Select(x => x.GetProperty("kv").GetString()));
        Assert.All(rows, x => Assert.Equal("f16", x.GetProperty("reference").GetString()));
        Assert.Equal(0, rows[0].GetProperty("p999_kl").GetDouble());
        var q = rows[1];
        Assert.True(q.GetProperty("p999_kl").GetDouble() > q.GetProperty("p99_kl").GetDouble());
        Assert.True(q.GetProperty("p99_kl").GetDouble() > q.GetProperty("mean_kl").GetDouble());
        Assert.True(q.GetProperty("max_kl").GetDouble() >= q.GetProperty("p999_kl").GetDouble());
        var table = InProcessCli.Run("eval", "kl", "-m", Stories, "--text", StoriesText(20_000), "--ctx", "64", "--windows", "1", "--kv", "int8", "-t", "2");
        Assert.Contains("| kv | mean KL | KL 99% | KL 99.9% | top-1 agree |", table.Out);
    }

    [Fact]
    public void PplReportFolderHasTableRowsPlotAndIndex()
    {
        var report = Path.Combine(_dir, "ppl-report");
        var r = InProcessCli.Run("eval", "ppl", "-m", Stories, "--text", StoriesText(20_000), "--ctx", "128", "--windows", "2", "--kv", "f32,int4,kivi2", "-t", "2", "--report", report);
        Assert.Equal(0, r.Code);
        Assert.Contains("| kv | ppl | ± | tokens | bits/element | KV bytes/token |", r.Out);
        foreach (var f in new[] { "table.md", "results.jsonl", "run.json", "index.md", "index.html", "ppl_vs_bits.png" })
            Assert.True(File.Exists(Path.Combine(report, f)), f);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(report, "results.jsonl")).Length);
        AssertPng(Path.Combine(report, "ppl_vs_bits.png"));
        var run = JsonDocument.Parse(File.ReadAllText(Path.Combine(report, "run.json"))).RootElement;
        foreach (var key in new[] { "model", "text", "ctx", "windows", "kv_specs", "threads", "machine" })
            Assert.True(run.TryGetProperty(key, out _), key);
        Assert.Contains(EvalFixtures.Stories.Weights.Fingerprint, run.GetProperty("model").GetString());
        Assert.Equal(InProcessCli.Run("--version").Out.Trim(), run.GetProperty("kvq").GetString()); // one version everywhere
        var index = File.ReadAllText(Path.Combine(report, "index.md"));
        Assert.Contains("![", index);
        Assert.Contains("| kivi2 |", index);
        Assert.Contains("<img src=\"ppl_vs_bits.png\"", File.ReadAllText(Path.Combine(report, "index.html")));
    }

    [Fact]
    public void NeedleAndMemoryReportsHaveHeatMapsAndMemoryPlot()
    {
        var needle = Path.Combine(_dir, "needle");
        var r = InProcessCli.Run("eval", "needle", "-m", Stories, "--text", StoriesText(40_000), "--kv", "f32,int2", "--lengths", "160,256",
            "--depths", "0,1", "--trials", "1", "-t", "2", "--report", needle);
        Assert.Equal(0, r.Code);
        Assert.Contains("| depth \\ length | 160 | 256 |", r.Out);
        foreach (var f in new[] { "needle_f32.png", "needle_int2.png", "needle_vs_bits.png", "trials.jsonl" })
            Assert.True(File.Exists(Path.Combine(needle, f)), f);
        AssertPng(Path.Combine(needle, "needle_int2.png"));
        Assert.Equal(2 * 4, File.ReadAllLines(Path.Combine(needle, "results.jsonl")).Length); // spec x length x depth cells

        var memory = Path.Combine(_dir, "memory");
        r = InProcessCli.Run("eval", "memory", "-m", Stories, "--kv", "f16,int4", "--ctx", "64,512", "--report", memory, "--json");
        Assert.Equal(0, r.Code);
        var rows = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(4, rows.Count);
        Assert.All(rows, x => Assert.Equal(EvalFixtures.Stories.Weights.WeightBytes, x.GetProperty("weights_bytes").GetInt64()));
        AssertPng(Path.Combine(memory, "kv_memory_vs_ctx.png"));
    }

    [Fact]
    public void TableMarkdownConvertsToHtmlTables()
    {
        var t = new MarkdownTable<(string A, double B)>().Left("a", x => x.A).Right("b", x => MarkdownTable<(string, double)>.F(x.B, 1));
        Assert.Equal(["| a | b |", "|---|---:|"], t.HeaderLines());
        Assert.Equal("| f16 | 2.5 |", t.Line(("f16", 2.5)));
    }

    private static void AssertPng(string path)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.True(bytes.Length > 2000, $"{path}: {bytes.Length} bytes");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
    }
}

/// <summary>Ctrl-C (SIGINT) on the real kvq process: it stops after the current window, keeps the finished rows, writes the report.</summary>
public sealed class EvalCtrlCTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-eval-ctrlc-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [LinuxFact("sends SIGINT to a child kvq process and sets its signal disposition through libc")]
    public async Task SigintKeepsFinishedRowsAndWritesTheReport()
    {
        var text = Path.Combine(_dir, "stories.txt");
        File.WriteAllText(text, TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..60_000]);
        var report = Path.Combine(_dir, "report");
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "kvq.dll"), "eval", "ppl", "-m", Fixtures.StoriesGguf, "--text", text,
                     "--ctx", "512", "--kv", "f32,f16,int8,int4,int2,kivi4,kivi2,bf16", "-t", "1", "--report", report })
            psi.ArgumentList.Add(a);
        // A process started with SIGINT ignored (a background job, some test runners) passes that on, and .NET then leaves
        // SIGINT ignored: give the child the default disposition so that it installs its Ctrl-C handler.
        bool ignored = SigintIgnored(Environment.ProcessId);
        if (ignored) Signal(SigInt, SigDfl);
        System.Diagnostics.Process p;
        try
        {
            p = System.Diagnostics.Process.Start(psi)!;
        }
        finally
        {
            if (ignored) Signal(SigInt, SigIgn);
        }
        using var _ = p;
        Assert.False(SigintIgnored(p.Id), "the child ignores SIGINT");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        var results = Path.Combine(report, "results.jsonl");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (!(File.Exists(results) && File.ReadAllText(results).Length > 0) && !p.HasExited && sw.Elapsed.TotalSeconds < 30) await Task.Delay(10);
        if (p.HasExited) Assert.Fail("kvq finished before the first row appeared + Ctrl-C: " + await stderr);
        double firstRow = sw.Elapsed.TotalSeconds;
        using (var kill = System.Diagnostics.Process.Start("kill", ["-INT", p.Id.ToString()])) await kill.WaitForExitAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await p.WaitForExitAsync(timeout.Token);
        var err = await stderr;
        Assert.True(p.ExitCode == 130, $"exit code {p.ExitCode} after {sw.Elapsed.TotalSeconds:F1} s (first row at {firstRow:F1} s): {err[Math.Max(0, err.Length - 600)..]}");
        Assert.Contains("stopped by Ctrl-C", err);
        int rows = File.ReadAllLines(results).Length;
        Assert.InRange(rows, 1, 7);
        Assert.Equal(rows, (await stdout).Split('\n').Count(l => l.StartsWith("| ", StringComparison.Ordinal)) - 1); // minus the header row
        foreach (var f in new[] { "table.md", "run.json", "index.md", "index.html" }) Assert.True(File.Exists(Path.Combine(report, f)), f);
        Assert.Contains("Stopped by Ctrl-C", File.ReadAllText(Path.Combine(report, "table.md")));
    }

    private const int SigInt = 2;
    private static readonly IntPtr SigDfl = 0, SigIgn = 1;

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "signal")]
    private static extern IntPtr Signal(int signal, IntPtr handler);

    /// <summary>Bit 1 of SigIgn in /proc/PID/status (signal 2).</summary>
    private static bool SigintIgnored(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            if (line.StartsWith("SigIgn:", StringComparison.Ordinal))
                return (Convert.ToUInt64(line[7..].Trim(), 16) & (1UL << (SigInt - 1))) != 0;
        return false;
    }
}
