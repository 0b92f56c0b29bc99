using System.ClientModel;
using System.Globalization;
using System.Text.RegularExpressions;
using Kvq.Serving;
using OpenAI;
using OpenAI.Chat;

namespace Kvq.Server.Tests;

/// <summary>Swap preemption's counts on GET /metrics: a real server with a KV pool too small for its clients and
/// --preemption swap (a little host memory, the rest in files), driven by the official OpenAI SDK. What /metrics says
/// per tier equals the engine's snapshot, and accounts for every preemption the engine made.</summary>
/// <remarks>Alone (the "load" collection runs with nothing beside it): OpenTelemetry's exporter listens to every meter
/// named Kvq.Engine in the process, so a server another test class runs at the same time puts its own engine's
/// series on this server's /metrics, and the value read could be the other engine's (CI saw 0 for 7).</remarks>
[Collection("load")]
public sealed class SwapMetricsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-server-swap-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static long Metric(string text, string name, string? tier = null)
    {
        var labels = tier == null ? @"(\{[^}]*\})?" : $@"\{{[^}}]*tier=""{tier}""[^}}]*\}}";
        var m = Regex.Match(text, $@"(?m)^{name}{labels} (?<v>[0-9.e+]+)");
        Assert.True(m.Success, $"{name}{(tier == null ? "" : $" (tier {tier})")} is not on /metrics:\n{text}");
        return (long)double.Parse(m.Groups["v"].Value, CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task SwapCountsOnMetricsMatchWhatTheEngineDid()
    {
        // stories260K f16: 640 bytes a token, 20 KiB a block of 32. Six blocks, no decode reserve: three prompts fill the
        // pool and every answer that grows past its block preempts another request.
        await using var server = await TestServer.StartAsync(kvBudget: 6 * 20 * 1024, engineOptions: o => o with
        {
            DecodeReserveTokens = 0,
            Preemption = PreemptionMode.Swap,
            SwapHostBytes = 30 * 1024,
            SwapFileBytes = 16 << 20,
            SwapDirectory = _dir,
        });
        var client = new ChatClient(TestServer.ModelId, new ApiKeyCredential("unused"),
            new OpenAIClientOptions { Endpoint = new Uri(server.BaseAddress, "/v1") });
        var answers = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => client.CompleteChatAsync(
            [new UserChatMessage($"Tell story number {i} about a cat named Tom and a dog named Rex who go to the park")],
            new ChatCompletionOptions { MaxOutputTokenCount = 90, Temperature = 0 })));
        Assert.All(answers, a => Assert.False(string.IsNullOrEmpty(a.Value.Content[0].Text)));
        await server.WaitIdleAsync();

        var snap = server.Engine.Snapshot();
        var w = snap.Swap;
        Assert.True(snap.Preemptions > 0, "the pool was meant to force preemptions");
        Assert.Equal(snap.Preemptions, w.OutHost + w.OutFile + w.Recomputes);   // no file was damaged: every recompute is a refusal
        Assert.Equal((w.OutHost, w.OutFile), (w.InHost, w.InFile));
        Assert.Equal((0L, 0L), (w.HeldHostBytes, w.HeldFileBytes));

        var text = await server.Http.GetStringAsync("/metrics");
        Assert.Equal(w.OutHost, Metric(text, "kvq_engine_swap_out_total", "host"));
        Assert.Equal(w.OutFile, Metric(text, "kvq_engine_swap_out_total", "file"));
        Assert.Equal(w.OutHostBytes, Metric(text, "kvq_engine_swap_out_bytes_total", "host"));
        Assert.Equal(w.OutFileBytes, Metric(text, "kvq_engine_swap_out_bytes_total", "file"));
        Assert.Equal(w.InHost, Metric(text, "kvq_engine_swap_in_total", "host"));
        Assert.Equal(w.InFile, Metric(text, "kvq_engine_swap_in_total", "file"));
        Assert.Equal(w.InFileBytes, Metric(text, "kvq_engine_swap_in_bytes_total", "file"));
        Assert.Equal(w.Recomputes, Metric(text, "kvq_engine_swap_recomputes_total"));
        Assert.Equal(0, Metric(text, "kvq_engine_swap_held_bytes", "file"));
        Assert.Equal(snap.Preemptions, Metric(text, "kvq_engine_preemptions_total"));
    }
}
