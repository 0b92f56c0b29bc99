using System.Text.Json;

namespace Kvq.Tests.Eval;

/// <summary>--policy/--budget on the command line: mistakes are one line and exit code 2, --list names every policy,
/// a grid crosses policies with formats (rows, bytes, the per-policy plot), generate runs under a policy.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class PolicyCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-policy-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Text()
    {
        var path = Path.Combine(_dir, "stories.txt");
        File.WriteAllText(path, TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..20_000]);
        return path;
    }

    [Theory]
    [InlineData("unknown policy 'lru'", "--policy", "lru", "--budget", "0.25")]
    [InlineData("give --budget", "--policy", "h2o")]
    [InlineData("--budget needs --policy", "--budget", "0.25")]
    [InlineData("budget '1.5'", "--policy", "h2o", "--budget", "1.5")]
    [InlineData("budget scope 'row'", "--policy", "h2o", "--budget", "0.5", "--budget-per", "row")]
    [InlineData("unknown argument 'windw'", "--policy", "snapkv:windw=4", "--budget", "0.5")]
    [InlineData("'kivi2' encodes whole blocks", "--policy", "h2o", "--budget", "0.5", "--kv", "f16,kivi2")]
    public void MistakesAreOneLineAndExitCode2(string expected, params string[] extra)
    {
        InProcessCli.AssertUserError(InProcessCli.Run(["eval", "ppl", "-m", Fixtures.StoriesGguf, "--text", Text(), "--ctx", "64", .. extra]), expected);
    }

    [Fact]
    public void ListNamesEveryPolicy()
    {
        var r = InProcessCli.Run("eval", "--list");
        Assert.Equal(0, r.Code);
        foreach (var (name, _) in Kvq.Cache.Policies.KvPolicyRegistry.Policies) Assert.Contains($"  {name} ", r.Out);
    }

    [Fact]
    public void PplGridCrossesPoliciesWithFormats()
    {
        var report = Path.Combine(_dir, "report");
        var r = InProcessCli.Run("eval", "ppl", "-m", Fixtures.StoriesGguf, "--text", Text(), "--ctx", "128", "--windows", "1", "--kv", "f32,int8",
            "--policy", "none", "--policy", "snapkv:window=8,pool=3", "--budget", "0.5", "--budget-per", "layer", "-t", "2", "--json", "--report", report);
        Assert.Equal(0, r.Code);
        var rows = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["f32", "f32 snapkv:window=8,pool=3@50%/layer", "int8", "int8 snapkv:window=8,pool=3@50%/layer"],
            rows.Select(x => x.GetProperty("kv").GetString()));
        // Half the tokens kept: about half the bytes per token of context (block rounding aside).
        for (int i = 0; i < 4; i += 2)
        {
            double full = rows[i].GetProperty("kv_bytes_per_token").GetDouble(), half = rows[i + 1].GetProperty("kv_bytes_per_token").GetDouble();
            Assert.InRange(half / full, 0.45, 0.65);
            Assert.True(rows[i + 1].GetProperty("ppl").GetDouble() > 1);
        }
        Assert.True(new FileInfo(Path.Combine(report, "ppl_by_policy.png")).Length > 1000);
    }

    [Fact]
    public void GenerateRunsUnderAPolicy()
    {
        var r = InProcessCli.Run("generate", "-m", Fixtures.StoriesGguf, "-p", "Once upon a time", "-n", "60", "--temperature", "0",
            "--kv", "f16", "--policy", "merge:streaming", "--budget", "24", "-t", "2");
        Assert.Equal(0, r.Code);
        Assert.Contains("24 kept in layer 0", r.Err);
        Assert.StartsWith("Once upon a time", r.Out);
    }
}
