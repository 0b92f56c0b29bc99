using System.Text.Json;
using Kvq.Tests.Eval;

namespace Kvq.Tests.Cli;

/// <summary>kvq bench serve as a user runs it: rows per (kv, concurrency), a report folder, bad input refused.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class BenchServeCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-bench-serve-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void RowsPerFormatAndConcurrencyWithAReport()
    {
        var text = Path.Combine(_dir, "stories.txt");
        File.WriteAllText(text, TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..30_000]);
        var report = Path.Combine(_dir, "report");
        var r = InProcessCli.Run("bench", "serve", "-m", Fixtures.StoriesGguf, "--text", text, "--kv", "f32,f16", "--kv-budget", "2MiB",
            "--requests", "6", "--prompt-tokens", "140", "--output-tokens", "9", "-C", "1,3", "--shared-prefix", "0.8", "-t", "1",
            "--json", "--report", report);
        Assert.True(r.Code == 0, r.Err);
        var rows = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(4, rows.Count);
        Assert.Equal(["f32", "f16", "f32", "f16"], rows.Select(x => x.GetProperty("kv").GetString()));
        Assert.Equal([1, 1, 3, 3], rows.Select(x => x.GetProperty("concurrency").GetInt32()));
        var shape = Serving.EngineFixtures.Model(Serving.EngineFixtures.Stories).KvShape;
        foreach (var row in rows)
        {
            Assert.Equal(6, row.GetProperty("completed").GetInt32());
            Assert.Equal(0, row.GetProperty("failed").GetInt32());
            Assert.InRange(row.GetProperty("max_running").GetInt32(), 1, row.GetProperty("concurrency").GetInt32());
            Assert.True(row.GetProperty("output_tok_s").GetDouble() > 0);
            Assert.InRange(row.GetProperty("peak_kv_bytes").GetInt64(), 1, 2 << 20);
            // Per running request: no more than the peak, and at one client (one running at a time) a request's own
            // 140 + 9 tokens at most (5 blocks of 32).
            long perRunning = row.GetProperty("kv_held_per_running_bytes").GetInt64();
            Assert.InRange(perRunning, 1, row.GetProperty("peak_kv_bytes").GetInt64());
            Assert.InRange(row.GetProperty("mean_running").GetDouble(), 1, row.GetProperty("max_running").GetInt32());
            if (row.GetProperty("concurrency").GetInt32() == 1) Assert.Equal(1, row.GetProperty("mean_running").GetDouble());
            // Per token of context: at least the format's bytes per token (layers x KV dims x keys and values), partial
            // blocks only add (and at one client nothing is shared). Held vs unshared: one running at a time shares
            // nothing (exactly 1); with 3 clients, prefix hits among running requests can only lower it.
            long perToken = (long)shape.Layers * shape.KvDim * 2 * (row.GetProperty("kv").GetString() == "f32" ? 4 : 2);
            double heldPerToken = row.GetProperty("kv_held_per_token_bytes").GetDouble();
            if (row.GetProperty("concurrency").GetInt32() == 1) Assert.InRange(heldPerToken, perToken, perToken * 2);
            else Assert.InRange(heldPerToken, perToken * 0.1, perToken * 2);
            Assert.InRange(row.GetProperty("mean_kv_context_tokens").GetDouble(), 1, 3 * 149);
            if (row.GetProperty("concurrency").GetInt32() == 1) Assert.Equal(1, row.GetProperty("kv_held_vs_unshared").GetDouble(), 12);
            else Assert.InRange(row.GetProperty("kv_held_vs_unshared").GetDouble(), 0.1, 1);
            Assert.True(row.GetProperty("peak_kv_cached_bytes").GetInt64() > 0); // the shared prefix, once a request ends
            Assert.True(row.GetProperty("ttft_p50_ms").GetDouble() <= row.GetProperty("ttft_p99_ms").GetDouble());
            // BOS + 112 shared tokens of each 140-token prompt: 3 full blocks (96 tokens) come from the cache for every request
            // admitted after the first one has run (5 of 6 one at a time; at least 3 of 6 with 3 clients).
            Assert.InRange(row.GetProperty("prefix_hit_rate").GetDouble(), 0.33, 0.58);
        }
        foreach (var file in new[] { "rows.jsonl", "throughput.png", "ttft.png", "itl.png" })
            Assert.True(File.Exists(Path.Combine(report, file)), file);
    }

    /// <summary>A token policy in the engine: each request keeps at most 48 tokens per layer, so at the same budget more
    /// of the 150-token requests run at once than with every token kept.</summary>
    [Fact]
    public void APolicyRowRunsMoreRequestsAtOnce()
    {
        var text = Path.Combine(_dir, "stories.txt");
        File.WriteAllText(text, TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..30_000]);
        var r = InProcessCli.Run("bench", "serve", "-m", Fixtures.StoriesGguf, "--text", text, "--kv", "f32", "--kv-budget", "1MiB",
            "--requests", "6", "--prompt-tokens", "150", "--output-tokens", "12", "-C", "6", "-t", "1", "--step-tokens", "64",
            "--policy", "none", "--policy", "streaming", "--budget", "48", "--json");
        Assert.True(r.Code == 0, r.Err);
        var rows = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["f32", "f32 streaming@48"], rows.Select(x => x.GetProperty("kv").GetString()));
        Assert.All(rows, row => Assert.Equal(6, row.GetProperty("completed").GetInt32()));
        Assert.True(rows[1].GetProperty("max_running").GetInt32() > rows[0].GetProperty("max_running").GetInt32(),
            $"max_running {rows[1].GetProperty("max_running")} under the policy vs {rows[0].GetProperty("max_running")} without");
    }

    /// <summary>Prompts that the KV budget cannot hold fail every request: one line naming why, exit code 2, no table
    /// (a row of NaN latencies and 0 tok/s came out, with exit code 1 and " (Parameter 'messages')" on the error).</summary>
    [Fact]
    public void PromptsOverTheBudgetAreOneLineNotARowOfNaN()
    {
        var r = InProcessCli.Run("bench", "serve", "-m", Fixtures.StoriesGguf, "--kv", "f16", "--kv-budget", "64KiB",
            "--requests", "2", "--prompt-tokens", "400", "--output-tokens", "2", "-C", "1", "-t", "1");
        Assert.Equal(2, r.Code);   // progress lines ("serve f16, 1 clients: 1/2") come before the error on stderr
        Assert.Contains("kvq: f16, 1 clients: every request failed, so nothing was measured: the prompt has 400 tokens", r.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter", r.Err, StringComparison.Ordinal);
        Assert.Equal("", r.Out);
    }

    /// <summary>The table's heading names every concurrency it ran (it said "1 concurrent clients" over -C 1,2).</summary>
    [Fact]
    public void TheHeadingNamesEveryConcurrency()
    {
        var r = InProcessCli.Run("bench", "serve", "-m", Fixtures.StoriesGguf, "--kv", "f16", "--kv-budget", "2MiB",
            "--requests", "2", "--prompt-tokens", "20", "--output-tokens", "2", "-C", "1,2", "-t", "1");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("2 requests, prompts 20 tokens, 2 output tokens, 1,2 concurrent clients (closed loop)", r.Out, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--kv-budget", "lots", "not a size")]
    [InlineData("--kv-budget", "1KiB", "holds no sequence")]
    [InlineData("--requests", "0", "--requests")]
    [InlineData("--shared-prefix", "1.5", "--shared-prefix")]
    [InlineData("--concurrency", "0", "--concurrency")]
    [InlineData("--prompt-tokens", "5000", "context")]
    public void BadInputExitsWithTwo(string option, string value, string message)
    {
        var args = new Dictionary<string, string> { ["--requests"] = "2", ["--prompt-tokens"] = "20", ["--output-tokens"] = "2", ["-t"] = "1" };
        args[option] = value;
        var r = InProcessCli.Run(["bench", "serve", "-m", Fixtures.StoriesGguf, .. args.SelectMany(a => new[] { a.Key, a.Value })]);
        Assert.Equal(2, r.Code);
        Assert.Contains(message, r.Err);
    }
}
