using System.Text.Json;

namespace Kvq.Tests.Eval;

/// <summary>KVQuant :mixed through the CLI on a real model: a fresh profile, per-layer widths shown by `kvq inspect`,
/// and `kvq eval ppl` storing the same bytes as the uniform width with the same mean.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class MixedWidthsCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-mixed-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void InspectShowsTheWidthsAndEvalStoresTheSameBytesAsTheUniformWidth()
    {
        string model = Fixtures.StoriesGguf, profile = Path.Combine(_dir, "s.kvqp");
        var cal = InProcessCli.Run("calibrate", "-m", model, "--text", Fixtures.Text("tinyshakespeare/input.txt"), "--samples", "4",
            "--length", "256", "--out", profile, "-t", "2");
        Assert.True(cal.Code == 0, cal.Err);
        var inspect = InProcessCli.Run("inspect", model, "--kv", "nuq3-1%,nuq3-1%:mixed", "--profile", profile, "--ctx", "256");
        Assert.True(inspect.Code == 0, inspect.Err);
        Assert.Contains("| nuq3-1%:mixed |", inspect.Out);
        int layers = 5;   // stories260K
        var line = inspect.Out.Split('\n').FirstOrDefault(l => l.StartsWith("nuq3-1%:mixed: layers differ"));
        // :mixed gives stories260K's layers different widths (a profile whose layers all got 3 bits would show no line).
        if (line == null) Assert.Fail($"no 'layers differ' line in:\n{inspect.Out}");
        // "key bits by layer 2,3,...; value bits ..." : each side keeps a mean of 3 bits.
        foreach (var part in new[] { "key bits by layer ", "value bits " })
        {
            int at = line.IndexOf(part, StringComparison.Ordinal) + part.Length;
            var bits = line[at..].Split([';', ')'])[0].Split(',').Select(int.Parse).ToArray();
            Assert.Equal(layers, bits.Length);
            Assert.Equal(3 * layers, bits.Sum());
            Assert.All(bits, b => Assert.InRange(b, 2, 4));
        }
        var text = Path.Combine(_dir, "t.txt");
        File.WriteAllText(text, TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..6000]);
        var ppl = InProcessCli.Run("eval", "ppl", "-m", model, "--text", text, "--ctx", "128", "--windows", "2", "--profile", profile,
            "--kv", "nuq3-1%,nuq3-1%:mixed,nuq2-1%", "--json", "-t", "2");
        Assert.True(ppl.Code == 0, ppl.Err);
        var rows = ppl.Out.Split('\n').Where(l => l.StartsWith('{')).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        double Bits(string kv) => rows.Single(r => r.GetProperty("kv").GetString() == kv).GetProperty("bits_per_element").GetDouble();
        double Ppl(string kv) => rows.Single(r => r.GetProperty("kv").GetString() == kv).GetProperty("ppl").GetDouble();
        // Head dim 8: B-bit codes take B bytes a token, so widths with the same sum take the same block bytes; the sparse
        // outlier rows beside the blocks depend on the activations, which the layers' widths change a little.
        Assert.InRange(Math.Abs(Bits("nuq3-1%") - Bits("nuq3-1%:mixed")), 0, 0.05);
        Assert.True(Bits("nuq2-1%") < Bits("nuq3-1%"));
        Assert.True(double.IsFinite(Ppl("nuq3-1%:mixed")) && Ppl("nuq3-1%:mixed") > 1);
    }
}
