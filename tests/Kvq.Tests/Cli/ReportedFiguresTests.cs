using System.Text.Json;
using Kvq.Tests.Eval;

namespace Kvq.Tests.Cli;

/// <summary>What kvq reports beside the figures: bench's repetitions and spread, perplexity's standard error, one version.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class ReportedFiguresTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-figures-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void BenchRepetitionsGiveASpread()
    {
        var r = InProcessCli.Run("bench", "-m", Fixtures.StoriesGguf, "--ctx", "16", "--decode", "2", "-r", "3", "-t", "1", "--json");
        Assert.Equal(0, r.Code);
        var j = JsonDocument.Parse(r.Out).RootElement;
        Assert.Equal(3, j.GetProperty("repetitions").GetInt32());
        foreach (var (figure, spread) in new[] { ("prefill_tok_s", "prefill_spread"), ("decode_tok_s", "decode_spread") })
        {
            var s = j.GetProperty(spread);
            double min = s.GetProperty("min").GetDouble(), median = s.GetProperty("median").GetDouble(), max = s.GetProperty("max").GetDouble();
            Assert.True(min > 0 && min <= median && median <= max);
            Assert.InRange(j.GetProperty(figure).GetDouble(), min, max); // the best run's figure is one of the runs
            Assert.True(s.GetProperty("sd").GetDouble() >= 0);
        }
        var text = InProcessCli.Run("bench", "-m", Fixtures.StoriesGguf, "--ctx", "16", "--decode", "2", "-r", "2", "-t", "1");
        Assert.Matches(@"over 2 runs \(best above\): prefill tok/s [\d.]+ ± [\d.]+ \(min [\d.]+, median [\d.]+, max [\d.]+\); decode tok/s", text.Out);
    }

    [Fact]
    public void PerplexityHasItsStandardError()
    {
        var text = Path.Combine(_dir, "stories.txt");
        File.WriteAllText(text, TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..20_000]);
        var r = InProcessCli.Run("eval", "ppl", "-m", Fixtures.StoriesGguf, "--text", text, "--ctx", "64", "--windows", "4", "-t", "1", "--json");
        Assert.Equal(0, r.Code);
        var j = JsonDocument.Parse(r.Out.Trim()).RootElement;
        double ppl = j.GetProperty("ppl").GetDouble(), err = j.GetProperty("ppl_error").GetDouble();
        Assert.InRange(err, 1e-3 * ppl, 0.5 * ppl);
    }

    [Fact]
    public void VersionIsOneEverywhere()
    {
        var v = InProcessCli.Run("--version");
        Assert.Equal(0, v.Code);
        Assert.Equal(KvqInfo.InformationalVersion, v.Out.Trim());
        Assert.StartsWith("0.1.0", v.Out.Trim());
    }
}
