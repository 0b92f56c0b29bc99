using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Kvq.Server.Tests;

/// <summary>Every bad request gets OpenAI's error shape {"error": {message, type, param, code}} with the right status,
/// and the server goes on serving.</summary>
public sealed class ErrorTests : IAsyncLifetime
{
    private TestServer _server = null!;

    public async Task InitializeAsync() => _server = await TestServer.StartAsync(o => o with { MaxMessages = 8, MaxTokensLimit = 256, MaxRequestBodyBytes = 64 << 10 });
    public async Task DisposeAsync() => await _server.DisposeAsync();

    internal static async Task<JsonElement> AssertErrorAsync(HttpResponseMessage r, HttpStatusCode status, string? param, string? code = null)
    {
        var body = await r.Content.ReadAsStringAsync();
        Assert.True(status == r.StatusCode, $"expected {(int)status}, got {(int)r.StatusCode}: {body}");
        Assert.Equal("application/json", r.Content.Headers.ContentType?.MediaType);
        var root = JsonDocument.Parse(body).RootElement;
        Assert.Single(root.EnumerateObject());
        var error = root.GetProperty("error");
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("type").GetString()));
        Assert.Equal(param, error.GetProperty("param").ValueKind == JsonValueKind.Null ? null : error.GetProperty("param").GetString());
        var c = error.GetProperty("code");
        if (code != null) Assert.Equal(code, c.GetString());
        return error;
    }

    private Task<HttpResponseMessage> Chat(string json) => _server.PostJsonAsync("/v1/chat/completions", json);
    private const string Hi = """[{"role":"user","content":"hi"}]""";

    [Theory]
    [InlineData("""{"messages": [""", null, "invalid_json")]
    [InlineData("""{"messages": [{"role":"user","content":"hi"}],}""", null, "invalid_json")]
    [InlineData("not json at all", null, "invalid_json")]
    [InlineData("[1, 2]", null, "invalid_json")]
    [InlineData("\"a string\"", null, "invalid_json")]
    [InlineData("""{"messages": "hi"}""", "messages", "invalid_type")]
    [InlineData("""{"messages": [{"role":"user","content":"hi"}], "temperature": "hot"}""", "temperature", "invalid_type")]
    [InlineData("""{"messages": [{"role":"user","content":"hi"}], "max_tokens": 1.5}""", "max_tokens", "invalid_type")]
    [InlineData("""{"messages": [{"role":"user","content":"hi"}], "stream": "yes"}""", "stream", "invalid_type")]
    [InlineData("""{"messages": [{"role":"user","content":"hi"}], "stop": 5}""", "stop", "invalid_value")]
    [InlineData("""{"messages": [{"role":7,"content":"hi"}]}""", "messages", "invalid_type")]
    [InlineData("""{"messages": [{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""", "messages", null)]
    public async Task MalformedBodiesAndWrongTypesAre400(string body, string? param, string? code)
    {
        await AssertErrorAsync(await Chat(body), HttpStatusCode.BadRequest, param, code);
    }

    [Theory]
    [InlineData("""{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}""", HttpStatusCode.NotFound, "model", "model_not_found")]
    [InlineData("""{"messages":[]}""", HttpStatusCode.BadRequest, "messages", "invalid_value")]
    [InlineData("""{"model":"stories260K"}""", HttpStatusCode.BadRequest, "messages", "missing_required_parameter")]
    [InlineData("""{"messages":[{"role":"wizard","content":"hi"}]}""", HttpStatusCode.BadRequest, "messages", null)]
    [InlineData("""{"messages":[{"role":"user"}]}""", HttpStatusCode.BadRequest, "messages", "missing_required_parameter")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"n":2}""", HttpStatusCode.BadRequest, "n", null)]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":257}""", HttpStatusCode.BadRequest, "max_tokens", null)]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":0}""", HttpStatusCode.BadRequest, "max_completion_tokens", null)]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"temperature":2.5}""", HttpStatusCode.BadRequest, "temperature", null)]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"top_p":0}""", HttpStatusCode.BadRequest, "top_p", null)]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"presence_penalty":3}""", HttpStatusCode.BadRequest, "presence_penalty", null)]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"top_logprobs":3}""", HttpStatusCode.BadRequest, "top_logprobs", null)]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"logprobs":true,"top_logprobs":21}""", HttpStatusCode.BadRequest, "top_logprobs", null)]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"stop":[""]}""", HttpStatusCode.BadRequest, "stop", null)]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}""", HttpStatusCode.BadRequest, "tools", "unsupported_parameter")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"logit_bias":{"5":10}}""", HttpStatusCode.BadRequest, "logit_bias", "unsupported_parameter")]
    [InlineData("""{"messages":[{"role":"user","content":"RAISE please"}]}""", HttpStatusCode.BadRequest, "messages", null)]
    public async Task RequestsOutsideTheLimitsAreRefusedClearly(string body, HttpStatusCode status, string? param, string? code)
    {
        await AssertErrorAsync(await Chat(body), status, param, code);
    }

    /// <summary>A whole number past its integer field's range is the right type with a value out of range: invalid_value
    /// naming the field and the range, as for the server's own limits (not invalid_type, as 1.5 is).</summary>
    [Theory]
    [InlineData("/v1/chat/completions", "max_tokens", "99999999999", "max_tokens", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/v1/chat/completions", "max_tokens", "-99999999999", "max_tokens", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/v1/chat/completions", "max_completion_tokens", "2147483648", "max_completion_tokens", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/v1/chat/completions", "n", "99999999999999999999999", "n", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/v1/chat/completions", "top_logprobs", "4294967296", "top_logprobs", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/v1/chat/completions", "top_k", "99999999999", "top_k", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/v1/chat/completions", "seed", "9223372036854775808", "seed", "64-bit integer range -9223372036854775808 to 9223372036854775807")]
    [InlineData("/v1/completions", "max_tokens", "99999999999", "max_tokens", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/v1/completions", "logprobs", "99999999999", "logprobs", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/v1/completions", "best_of", "99999999999", "best_of", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/v1/completions", "prompt", "[1, 99999999999]", "prompt[1]", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/v1/completions", "prompt", "[[1, 2, -99999999999]]", "prompt[0][2]", "32-bit integer range -2147483648 to 2147483647")]
    [InlineData("/detokenize", "tokens", "[1, 99999999999]", "tokens[1]", "32-bit integer range -2147483648 to 2147483647")]
    public async Task IntegersPastTheirFieldsRangeAreOutOfRangeValues(string route, string param, string value, string field, string range)
    {
        string others = route switch
        {
            "/v1/chat/completions" => $"\"messages\": {Hi}, ",
            "/v1/completions" when param != "prompt" => "\"prompt\": \"Once\", ",
            _ => "",
        };
        var e = await AssertErrorAsync(await _server.PostJsonAsync(route, $$"""{{{others}}"{{param}}": {{value}}}"""),
            HttpStatusCode.BadRequest, param == "tokens" ? "tokens" : param, "invalid_value");
        string message = e.GetProperty("message").GetString()!;
        Assert.Contains($"'{field}' is {value.Trim('[', ']').Split(',')[^1].Trim()}, out of range", message);
        Assert.Contains(range, message);
        Assert.Equal("invalid_request_error", e.GetProperty("type").GetString());
    }

    [Fact]
    public async Task TheLargestIntMeetsTheServersLimitAndAnExponentStaysAWrongType()
    {
        // Inside int's range the server's own limit answers, with the same code; 1e3 is not written as an integer.
        await AssertErrorAsync(await Chat($$"""{"messages": {{Hi}}, "max_tokens": 2147483647}"""), HttpStatusCode.BadRequest, "max_tokens", "invalid_value");
        await AssertErrorAsync(await Chat($$"""{"messages": {{Hi}}, "max_tokens": 1e3}"""), HttpStatusCode.BadRequest, "max_tokens", "invalid_type");
    }

    [Fact]
    public async Task TooManyMessages()
    {
        var messages = string.Join(",", Enumerable.Repeat("""{"role":"user","content":"hi"}""", 9));
        var e = await AssertErrorAsync(await Chat($$"""{"messages":[{{messages}}]}"""), HttpStatusCode.BadRequest, "messages");
        Assert.Contains("at most 8", e.GetProperty("message").GetString());
    }

    [Fact]
    public async Task APromptOverTheContextIsContextLengthExceeded()
    {
        int context = _server.Engine.ContextTokens;
        var longText = string.Concat(Enumerable.Repeat("The little dog ran to the park. ", context / 4));
        await AssertErrorAsync(await Chat($$"""{"messages":[{"role":"user","content":"{{longText}}"}]}"""), HttpStatusCode.BadRequest, "messages", "context_length_exceeded");
        var ids = string.Join(",", Enumerable.Repeat(5, context + 10));
        await AssertErrorAsync(await _server.PostJsonAsync("/v1/completions", $$"""{"prompt":[{{ids}}]}"""), HttpStatusCode.BadRequest, "prompt", "context_length_exceeded");
        await AssertErrorAsync(await _server.PostJsonAsync("/v1/completions", """{"prompt":[1, 99999]}"""), HttpStatusCode.BadRequest, "prompt");
        await AssertErrorAsync(await _server.PostJsonAsync("/v1/completions", """{"prompt":["a","b"]}"""), HttpStatusCode.BadRequest, "prompt");
        await AssertErrorAsync(await _server.PostJsonAsync("/v1/completions", """{"prompt":""}"""), HttpStatusCode.BadRequest, "prompt");
        await AssertErrorAsync(await _server.PostJsonAsync("/v1/completions", """{"prompt":"x","echo":true}"""), HttpStatusCode.BadRequest, "echo");
    }

    [Fact]
    public async Task OversizedBodiesAre413WithOrWithoutAContentLength()
    {
        var big = $$"""{"messages":[{"role":"user","content":"{{new string('a', 70 << 10)}}"}]}""";
        // With a Content-Length: refused before the body is sent (the client waits for "100 Continue", as curl does for
        // large bodies; one that sends anyway gets the 413 and a closed connection).
        var sized = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(big, Encoding.UTF8, "application/json") };
        sized.Headers.ExpectContinue = true;
        await AssertErrorAsync(await _server.Http.SendAsync(sized), HttpStatusCode.RequestEntityTooLarge, null, "request_too_large");
        // Chunked (no Content-Length): cut off while reading, past the limit.
        var chunked = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(big)));
        chunked.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = chunked };
        request.Headers.TransferEncodingChunked = true;
        request.Headers.ExpectContinue = true;
        await AssertErrorAsync(await _server.Http.SendAsync(request), HttpStatusCode.RequestEntityTooLarge, null, "request_too_large");
    }

    [Fact]
    public async Task NonUtf8BodiesAre400()
    {
        var bytes = Encoding.UTF8.GetBytes("""{"messages":[{"role":"user","content":"caf?"}]}""");
        bytes[Array.IndexOf(bytes, (byte)'?')] = 0xE9; // Latin-1 é: not UTF-8
        var content = new ByteArrayContent(bytes);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        await AssertErrorAsync(await _server.Http.PostAsync("/v1/chat/completions", content), HttpStatusCode.BadRequest, null, "invalid_encoding");
        await AssertErrorAsync(await _server.Http.PostAsync("/v1/chat/completions", new ByteArrayContent([])), HttpStatusCode.BadRequest, null, "invalid_json");
    }

    [Fact]
    public async Task UnknownPathsAre404InTheSameShape()
    {
        await AssertErrorAsync(await _server.Http.GetAsync("/v1/embeddings"), HttpStatusCode.NotFound, null, "not_found");
    }

    /// <summary>A known path asked with the wrong method is 405 with an Allow header and OpenAI's error shape (it was a
    /// 404 "no such endpoint", as if the route did not exist); unknown paths stay 404.</summary>
    [Theory]
    [InlineData("GET", "/v1/completions", "POST")]
    [InlineData("GET", "/v1/chat/completions", "POST")]
    [InlineData("PUT", "/v1/chat/completions", "POST")]
    [InlineData("GET", "/tokenize", "POST")]
    [InlineData("DELETE", "/detokenize", "POST")]
    [InlineData("POST", "/v1/models", "GET")]
    [InlineData("DELETE", "/v1/models/stories260K", "GET")]
    [InlineData("POST", "/health", "GET")]
    public async Task AKnownPathWithTheWrongMethodIs405(string method, string path, string allowed)
    {
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (method != "GET" && method != "DELETE") request.Content = new StringContent("{}", Encoding.UTF8, "application/json");
        var r = await _server.Http.SendAsync(request);
        var error = await AssertErrorAsync(r, HttpStatusCode.MethodNotAllowed, null, "method_not_allowed");
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Contains($"{method} {path}", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal([allowed], r.Content.Headers.Allow);
    }

    /// <summary>Through the official OpenAI SDK's raw protocol call: a GET where a POST belongs reads as a client error
    /// with status 405 (the SDK surfaces it as ClientResultException).</summary>
    [Fact]
    public async Task TheOpenAiSdkSeesA405ForAGetOnCompletions()
    {
        var client = new OpenAI.OpenAIClient(new System.ClientModel.ApiKeyCredential("unused"),
            new OpenAI.OpenAIClientOptions { Endpoint = new Uri(_server.BaseAddress, "/v1") });
        var pipeline = client.Pipeline;
        using var message = pipeline.CreateMessage();
        message.Request.Method = "GET";
        message.Request.Uri = new Uri(_server.BaseAddress, "/v1/completions");
        message.ResponseClassifier = System.ClientModel.Primitives.PipelineMessageClassifier.Create([200]);
        await pipeline.SendAsync(message);
        Assert.Equal(405, message.Response!.Status);
        Assert.True(message.Response.IsError);
        var error = JsonDocument.Parse(message.Response.Content.ToString()).RootElement.GetProperty("error");
        Assert.Equal("method_not_allowed", error.GetProperty("code").GetString());
    }

    [Fact]
    public async Task AfterAllThatTheServerStillAnswers()
    {
        await Chat("{");
        await Chat("""{"messages":[]}""");
        var r = await Chat($$"""{"messages":{{Hi}},"max_tokens":3}""");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        await _server.WaitIdleAsync();
    }
}

public sealed class ServerLimitTests
{
    [Fact]
    public async Task AModelWithoutAChatTemplateRefusesChatButCompletes()
    {
        await using var server = await TestServer.StartAsync(chat: false);
        var e = await ErrorTests.AssertErrorAsync(await server.PostJsonAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}]}"""),
            HttpStatusCode.BadRequest, "messages", "chat_template_missing");
        Assert.Contains("chat template", e.GetProperty("message").GetString());
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/completions", """{"prompt":"Once","max_tokens":2}""")).StatusCode);
    }

    [Fact]
    public async Task ConcurrentRequestsPastTheCapAre429()
    {
        await using var server = await TestServer.StartAsync(o => o with { MaxConcurrentRequests = 1 });
        var first = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent("""{"prompt":"Once","max_tokens":400,"stream":true,"temperature":1,"seed":1}""", Encoding.UTF8, "application/json"),
        };
        using (var running = await server.Http.SendAsync(first, HttpCompletionOption.ResponseHeadersRead))
        {
            Assert.Equal(HttpStatusCode.OK, running.StatusCode);
            await ErrorTests.AssertErrorAsync(await server.PostJsonAsync("/v1/completions", """{"prompt":"Once","max_tokens":2}"""),
                (HttpStatusCode)429, null, "too_many_requests");
        }
        await server.WaitIdleAsync();
        // The slot is back once the first request is gone.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        HttpResponseMessage r;
        do r = await server.PostJsonAsync("/v1/completions", """{"prompt":"Once","max_tokens":2}""");
        while (r.StatusCode == (HttpStatusCode)429 && DateTime.UtcNow < deadline && await Delay());
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
    }

    private static async Task<bool> Delay()
    {
        await Task.Delay(50);
        return true;
    }

    [Fact]
    public async Task ARequestPastItsTimeIsStoppedWith504()
    {
        await using var server = await TestServer.StartAsync(o => o with { RequestTimeout = TimeSpan.FromMilliseconds(1) });
        await ErrorTests.AssertErrorAsync(await server.PostJsonAsync("/v1/completions", """{"prompt":"Once","max_tokens":400,"temperature":1,"seed":3}"""),
            HttpStatusCode.GatewayTimeout, null, "timeout");
        // Streamed: the stream ends with an error event, then [DONE].
        var r = await server.PostJsonAsync("/v1/completions", """{"prompt":"Once","max_tokens":400,"temperature":1,"seed":3,"stream":true}""");
        var events = await Sse.ReadAllAsync(r);
        Assert.Equal("[DONE]", events[^1]);
        Assert.Equal("timeout", JsonDocument.Parse(events[^2]).RootElement.GetProperty("error").GetProperty("code").GetString());
        await server.WaitIdleAsync();
    }
}
