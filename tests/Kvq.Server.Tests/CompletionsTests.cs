using System.Net;
using System.Text.Json;

namespace Kvq.Server.Tests;

/// <summary>/v1/completions, /v1/models, /health, /metrics, /tokenize and /detokenize over raw HTTP.</summary>
public sealed class CompletionsTests : IAsyncLifetime
{
    private TestServer _server = null!;

    public async Task InitializeAsync() => _server = await TestServer.StartAsync();
    public async Task DisposeAsync() => await _server.DisposeAsync();

    private async Task<JsonElement> PostOkAsync(string path, string json)
    {
        var r = await _server.PostJsonAsync(path, json);
        var body = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == HttpStatusCode.OK, $"{(int)r.StatusCode}: {body}");
        Assert.Equal("application/json", r.Content.Headers.ContentType?.MediaType);
        return JsonDocument.Parse(body).RootElement;
    }

    [Fact]
    public async Task ATextPromptGivesATextCompletionWithUsage()
    {
        var c = await PostOkAsync("/v1/completions", """{"model":"stories260K","prompt":"Once upon a time","max_tokens":10,"temperature":0}""");
        Assert.Equal("text_completion", c.GetProperty("object").GetString());
        var choice = c.GetProperty("choices")[0];
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.NotEmpty(choice.GetProperty("text").GetString()!);
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("logprobs").ValueKind);
        var usage = c.GetProperty("usage");
        Assert.Equal(10, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(usage.GetProperty("prompt_tokens").GetInt32() + 10, usage.GetProperty("total_tokens").GetInt32());
    }

    [Fact]
    public async Task TokenIdsAndTheSameTextGiveTheSameGreedyAnswer()
    {
        var tok = await PostOkAsync("/tokenize", """{"prompt":"Once upon a time"}""");
        var ids = tok.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray();
        Assert.Equal(ids.Length, tok.GetProperty("count").GetInt32());
        Assert.Equal(_server.Engine.ContextTokens, tok.GetProperty("max_model_len").GetInt32());
        var byText = await PostOkAsync("/v1/completions", """{"prompt":"Once upon a time","max_tokens":12,"temperature":0}""");
        var byIds = await PostOkAsync("/v1/completions", $$"""{"prompt":[{{string.Join(",", ids)}}],"max_tokens":12,"temperature":0}""");
        Assert.Equal(Text(byText), Text(byIds));
        // The prompt's ids come back as its text (without BOS, which decodes to nothing).
        var detok = await PostOkAsync("/detokenize", $$"""{"tokens":[{{string.Join(",", ids)}}]}""");
        Assert.Equal("Once upon a time", detok.GetProperty("prompt").GetString()!.Trim());
    }

    private static string Text(JsonElement completion) => completion.GetProperty("choices")[0].GetProperty("text").GetString()!;

    [Fact]
    public async Task StreamingSendsChunksThenUsageThenDone()
    {
        var whole = Text(await PostOkAsync("/v1/completions", """{"prompt":"The dog","max_tokens":15,"temperature":0}"""));
        var r = await _server.PostJsonAsync("/v1/completions",
            """{"prompt":"The dog","max_tokens":15,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}""");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var events = await Sse.ReadAllAsync(r);
        Assert.Equal("[DONE]", events[^1]);
        Assert.Single(events, e => e == "[DONE]");
        var chunks = Sse.Json(events).ToList();
        Assert.All(chunks, c => Assert.Equal("text_completion", c.GetProperty("object").GetString()));
        var withChoice = chunks.Where(c => c.GetProperty("choices").GetArrayLength() > 0).ToList();
        Assert.Equal(whole, string.Concat(withChoice.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString())));
        Assert.Equal("length", withChoice[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.All(withChoice[..^1], c => Assert.Equal(JsonValueKind.Null, c.GetProperty("choices")[0].GetProperty("finish_reason").ValueKind));
        // The usage chunk comes last, with no choices.
        Assert.Equal(0, chunks[^1].GetProperty("choices").GetArrayLength());
        Assert.Equal(15, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Single(chunks, c => c.TryGetProperty("usage", out _));
    }

    [Fact]
    public async Task StopStringsAsAStringOrAList()
    {
        var whole = Text(await PostOkAsync("/v1/completions", """{"prompt":"Once upon a time","max_tokens":40,"temperature":0}"""));
        int at = whole.IndexOf(' ', whole.Length / 2);
        var stop = whole.Substring(at, 3);
        foreach (var stopJson in new[] { JsonSerializer.Serialize(stop), $"[\"zzzz\",{JsonSerializer.Serialize(stop)}]" })
        {
            var c = await PostOkAsync("/v1/completions", $$"""{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"stop":{{stopJson}}}""");
            Assert.Equal(whole[..whole.IndexOf(stop, StringComparison.Ordinal)], Text(c));
            Assert.Equal("stop", c.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        }
        // Streamed: the same text, the stop string never sent.
        var r = await _server.PostJsonAsync("/v1/completions", $$"""{"prompt":"Once upon a time","max_tokens":40,"temperature":0,"stream":true,"stop":{{JsonSerializer.Serialize(stop)}}}""");
        var chunks = Sse.Json(await Sse.ReadAllAsync(r)).ToList();
        Assert.Equal(whole[..whole.IndexOf(stop, StringComparison.Ordinal)], string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString())));
    }

    [Fact]
    public async Task LegacyLogprobsListTokensAndAlternatives()
    {
        var c = await PostOkAsync("/v1/completions", """{"prompt":"The cat","max_tokens":4,"temperature":0,"logprobs":2}""");
        var lp = c.GetProperty("choices")[0].GetProperty("logprobs");
        Assert.Equal(4, lp.GetProperty("tokens").GetArrayLength());
        Assert.Equal(4, lp.GetProperty("token_logprobs").GetArrayLength());
        Assert.All(lp.GetProperty("top_logprobs").EnumerateArray(), d => Assert.InRange(d.EnumerateObject().Count(), 1, 2));
        Assert.Equal(0, lp.GetProperty("text_offset")[0].GetInt32());
    }

    [Fact]
    public async Task SeededSamplingRepeatsAndPenaltiesAreAccepted()
    {
        const string body = """{"prompt":"Once","max_tokens":20,"temperature":1,"top_p":0.9,"top_k":20,"min_p":0.02,"seed":7,"presence_penalty":0.5,"frequency_penalty":0.5}""";
        Assert.Equal(Text(await PostOkAsync("/v1/completions", body)), Text(await PostOkAsync("/v1/completions", body)));
    }

    [Fact]
    public async Task ModelsHealthAndMetrics()
    {
        var models = JsonDocument.Parse(await _server.Http.GetStringAsync("/v1/models")).RootElement;
        Assert.Equal("list", models.GetProperty("object").GetString());
        Assert.Equal(TestServer.ModelId, models.GetProperty("data")[0].GetProperty("id").GetString());
        Assert.Equal("model", models.GetProperty("data")[0].GetProperty("object").GetString());
        Assert.Equal(HttpStatusCode.OK, (await _server.Http.GetAsync($"/v1/models/{TestServer.ModelId}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await _server.Http.GetAsync("/v1/models/gpt-4")).StatusCode);
        Assert.Equal("ok", JsonDocument.Parse(await _server.Http.GetStringAsync("/health")).RootElement.GetProperty("status").GetString());
        await PostOkAsync("/v1/completions", """{"prompt":"Once","max_tokens":3}""");
        var metrics = await _server.Http.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
        var text = await metrics.Content.ReadAsStringAsync();
        Assert.Contains("kvq_engine_generated_tokens", text);
        Assert.Contains("kvq_engine_kv_blocks_free", text);
        // The KV byte gauges under the names docs/serving.md gives.
        foreach (var name in new[] { "kvq_engine_kv_held_bytes", "kvq_engine_kv_unshared_bytes", "kvq_engine_kv_cached_bytes", "kvq_engine_kv_context_tokens" })
            Assert.Matches(new System.Text.RegularExpressions.Regex($"(?m)^{name}[{{ ]"), text);
        Assert.Contains("# TYPE", text);
    }
}
