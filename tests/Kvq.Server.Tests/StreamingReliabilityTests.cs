using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;

namespace Kvq.Server.Tests;

public sealed class DisconnectTests
{
    /// <summary>Clients that go away mid-stream cancel their requests: every KV block comes back.</summary>
    [Fact]
    public async Task AClientThatDisconnectsMidStreamFreesItsBlocks()
    {
        await using var server = await TestServer.StartAsync();
        var freeAtRest = server.Engine.Pool.Cache.Sequences.Pool.FreeBlockCount;
        // A sampled story may end (end-of-generation) before the client leaves, on a fast machine: the test needs some
        // of the clients, not all, to leave while their request runs.
        int leftWhileRunning = 0;
        for (int i = 0; i < 6; i++)
        {
            using var client = new HttpClient { BaseAddress = server.BaseAddress };
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StringContent($$"""{"messages":[{"role":"user","content":"Tell me story {{i}}"}],"max_tokens":1500,"stream":true,"temperature":1,"seed":{{i}}}""",
                    Encoding.UTF8, "application/json"),
            };
            var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            for (int events = 0; events < 3;)
                if ((await reader.ReadLineAsync())?.StartsWith("data: ", StringComparison.Ordinal) == true) events++;
            if (server.Engine.Pool.Cache.Sequences.Pool.HeldBlockCount > 0 || server.Engine.Snapshot().Running > 0) leftWhileRunning++;
            // Gone: the connection closes without reading the rest.
            response.Dispose();
            client.Dispose();
            await server.WaitIdleAsync();
        }
        Assert.True(leftWhileRunning > 0, "no client left while its request was running");
        Assert.Equal(0, server.Engine.Pool.Cache.Sequences.Pool.HeldBlockCount);
        Assert.True(server.Engine.Pool.Cache.Sequences.Pool.FreeBlockCount >= freeAtRest);
    }

    private static Task<HttpResponseMessage> StreamAsync(TestServer server, string body) =>
        server.Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent(body, Encoding.UTF8, "application/json"),
        }, HttpCompletionOption.ResponseHeadersRead);

    /// <summary>Stopping the server (what SIGTERM does) lets short in-flight requests finish, cuts off long ones within
    /// the shutdown bound, and leaves the engine idle.</summary>
    [Fact]
    public async Task StoppingDrainsInFlightRequestsWithinTheBound()
    {
        // A bound of 5 s with an 8-token short request: at 2 s and 30 tokens the short one was cut off once at load ~70.
        var server = await TestServer.StartAsync(o => o with { ShutdownTimeout = TimeSpan.FromSeconds(5) });
        try
        {
            // Both in flight (their headers are back) when the stop begins.
            var shortOne = await StreamAsync(server, """{"prompt":"Once","max_tokens":8,"temperature":0,"stream":true}""");
            var longOne = await StreamAsync(server, """{"prompt":"Once","max_tokens":4000,"stream":true,"temperature":1,"seed":5}""");
            var clock = Stopwatch.StartNew();
            var stopping = server.Server.StopAsync();
            // The short one finishes normally during the drain.
            var events = await Sse.ReadAllAsync(shortOne);
            Assert.Equal("[DONE]", events[^1]);
            await stopping;
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"stop took {clock.Elapsed}");
            // The long one was cut off at the bound (or finished: the context is the limit); its request is gone either way.
            try { await longOne.Content.CopyToAsync(Stream.Null); } catch (HttpRequestException) { } catch (IOException) { }
            longOne.Dispose();
            await server.WaitIdleAsync();
        }
        finally
        {
            await server.DisposeAsync();
        }
    }
}

[CollectionDefinition("load", DisableParallelization = true)]
public sealed class LoadCollection;

[Collection("load")]
public sealed class LoadTests
{
    /// <summary>64 concurrent streaming clients x 3 rounds: no failures, every stream framed and ending with [DONE],
    /// the block pool back to idle.</summary>
    [Fact]
    public async Task SixtyFourConcurrentStreamingClientsThreeRounds()
    {
        await using var server = await TestServer.StartAsync(kvBudget: 16 << 20);
        var pool = server.Engine.Pool.Cache.Sequences.Pool;
        int failures = 0;
        var clock = Stopwatch.StartNew();
        for (int round = 0; round < 3; round++)
        {
            var clients = Enumerable.Range(0, 64).Select(async i =>
            {
                try
                {
                    bool chat = i % 2 == 0;
                    var body = chat
                        ? $$"""{"messages":[{"role":"user","content":"Story {{i}} of round {{round}}"}],"max_tokens":12,"stream":true,"stream_options":{"include_usage":true},"temperature":0.8,"seed":{{i}}}"""
                        : $$"""{"prompt":"Once upon a time {{i}}","max_tokens":12,"stream":true,"stream_options":{"include_usage":true},"temperature":0.8,"seed":{{i}}}""";
                    var r = await server.PostJsonAsync(chat ? "/v1/chat/completions" : "/v1/completions", body);
                    Assert.Equal(HttpStatusCode.OK, r.StatusCode);
                    var events = await Sse.ReadAllAsync(r);
                    Assert.Equal("[DONE]", events[^1]);
                    Assert.True(JsonDocument.Parse(events[^2]).RootElement.TryGetProperty("usage", out var usage),
                        $"client {i} of round {round}: the event before [DONE] has no usage: {events[^2]} (events: {events.Count})");
                    Assert.InRange(usage.GetProperty("completion_tokens").GetInt32(), 1, 12);
                }
                catch (Exception)
                {
                    Interlocked.Increment(ref failures);
                    throw;
                }
            }).ToArray();
            await Task.WhenAll(clients);
        }
        Assert.Equal(0, failures);
        await server.WaitIdleAsync();
        Assert.Equal(0, pool.HeldBlockCount);
        Assert.Equal(pool.BlockCount, pool.FreeBlockCount);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"the load test took {clock.Elapsed}");
    }
}
