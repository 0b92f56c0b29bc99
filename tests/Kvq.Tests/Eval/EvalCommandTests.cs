using System.Text.Json;
using Kvq.Cli;
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

    private static (int Code, string Out, string Err) Kvq(params string[] args)
    {
        var (stdout, stderr) = (Console.Out, Console.Error);
        var o = new StringWriter();
        var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        try
        {
            return (Program.Main(args), o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(stdout);
            Console.SetError(stderr);
        }
    }

    private string StoriesText(int chars)
    {
        var path = Path.Combine(_dir, $"stories{chars}.txt");
        File.WriteAllText(path, TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..chars]);
        return path;
    }

    private static void AssertUserError((int Code, string Out, string Err) r, string expected)
    {
        Assert.Equal(2, r.Code);
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("kvq: ", lines[0]);
        Assert.Contains(expected, lines[0]);
    }

    [Fact]
    public void BadArgumentsAreOneLineAndExitCode2()
    {
        string text = StoriesText(3000);
        AssertUserError(Kvq("eval", "ppl", "-m", Stories, "--text", text, "--kv", "f16,nope"), "unknown KV format 'nope'");
        AssertUserError(Kvq("eval", "ppl", "-m", Stories, "--text", Path.Combine(_dir, "missing.txt")), "text file not found");
        AssertUserError(Kvq("eval", "ppl", "-m", Path.Combine(_dir, "missing.gguf"), "--text", text), "model not found");
        AssertUserError(Kvq("eval", "ppl", "-m", Stories, "--text", text, "--ctx", "2000"), "longer than the text");
        AssertUserError(Kvq("eval", "kl", "-m", Stories, "--text", text, "--kv", "f16", "--ctx", "4096"), "longer than the model's context");
        AssertUserError(Kvq("eval", "ppl", "-m", Stories, "--text", text, "--ctx", "128", "--stride", "200"), "--stride 200");
        AssertUserError(Kvq("eval", "recall", "-m", Stories, "--text", text, "--kv", "f16", "--filler", "1500"), "too short");
        AssertUserError(Kvq("eval", "recall", "-m", Stories, "--text", text, "--kv", "f16", "--filler", "100,x"), "--filler: 'x'");
        AssertUserError(Kvq("eval", "passkey", "-m", Stories, "--kv", "f16", "--lengths", "100000"), "longer than the model's context");
        AssertUserError(Kvq("eval", "needle", "-m", Stories, "--text", text, "--kv", "f16", "--depths", "1.5"), "--depths: '1.5'");
        AssertUserError(Kvq("eval", "memory", "-m", Stories, "--kv", "f16/int4-bad"), "unknown KV format 'int4-bad'");
        AssertUserError(Kvq("eval"), "needs a subcommand");
        Assert.Equal(2, Kvq("eval", "ppl", "--no-such-option").Code);
    }

    [Fact]
    public void ListPrintsTheRegisteredFormats()
    {
        var r = Kvq("eval", "--list");
        Assert.Equal(0, r.Code);
        foreach (var (name, _) in global::Kvq.Cache.Codecs.KvCodecRegistry.Formats) Assert.Contains($"  {name} ", r.Out);
    }

    [Fact]
    public void PplJsonRowsKeepTheirFieldNames()
    {
        var r = Kvq("eval", "ppl", "-m", Stories, "--text", StoriesText(20_000), "--ctx", "128", "--windows", "2", "--kv", "f32,int8", "-t", "2", "--json");
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
    public void PplReportFolderHasTableRowsPlotAndIndex()
    {
        var report = Path.Combine(_dir, "ppl-report");
        var r = Kvq("eval", "ppl", "-m", Stories, "--text", StoriesText(20_000), "--ctx", "128", "--windows", "2", "--kv", "f32,int4,kivi2", "-t", "2", "--report", report);
        Assert.Equal(0, r.Code);
        Assert.Contains("| kv | ppl | tokens | bits/element | KV bytes/token |", r.Out);
        foreach (var f in new[] { "table.md", "results.jsonl", "run.json", "index.md", "index.html", "ppl_vs_bits.png" })
            Assert.True(File.Exists(Path.Combine(report, f)), f);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(report, "results.jsonl")).Length);
        AssertPng(Path.Combine(report, "ppl_vs_bits.png"));
        var run = JsonDocument.Parse(File.ReadAllText(Path.Combine(report, "run.json"))).RootElement;
        foreach (var key in new[] { "model", "text", "ctx", "windows", "kv_specs", "threads", "machine" })
            Assert.True(run.TryGetProperty(key, out _), key);
        Assert.Contains(EvalFixtures.Stories.Weights.Fingerprint, run.GetProperty("model").GetString());
        var index = File.ReadAllText(Path.Combine(report, "index.md"));
        Assert.Contains("![", index);
        Assert.Contains("| kivi2 |", index);
        Assert.Contains("<img src=\"ppl_vs_bits.png\"", File.ReadAllText(Path.Combine(report, "index.html")));
    }

    [Fact]
    public void NeedleAndMemoryReportsHaveHeatMapsAndMemoryPlot()
    {
        var needle = Path.Combine(_dir, "needle");
        var r = Kvq("eval", "needle", "-m", Stories, "--text", StoriesText(40_000), "--kv", "f32,int2", "--lengths", "160,256",
            "--depths", "0,1", "--trials", "1", "-t", "2", "--report", needle);
        Assert.Equal(0, r.Code);
        Assert.Contains("| depth \\ length | 160 | 256 |", r.Out);
        foreach (var f in new[] { "needle_f32.png", "needle_int2.png", "needle_vs_bits.png", "trials.jsonl" })
            Assert.True(File.Exists(Path.Combine(needle, f)), f);
        AssertPng(Path.Combine(needle, "needle_int2.png"));
        Assert.Equal(2 * 4, File.ReadAllLines(Path.Combine(needle, "results.jsonl")).Length); // spec x length x depth cells

        var memory = Path.Combine(_dir, "memory");
        r = Kvq("eval", "memory", "-m", Stories, "--kv", "f16,int4", "--ctx", "64,512", "--report", memory, "--json");
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
