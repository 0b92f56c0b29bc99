using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net;
using System.Text.Json;
using Kvq.Serving;
using OpenAI;
using OpenAI.Chat;

namespace Kvq.Server.Tests;

public sealed class AuthTests
{
    private const string Key = "sk-kvq-test-0123456789";

    [Fact]
    public async Task WithAnApiKeyRequestsNeedIt()
    {
        await using var server = await TestServer.StartAsync(o => o with { ApiKey = Key });
        using var bare = new HttpClient { BaseAddress = server.BaseAddress };
        foreach (var (method, path) in new[] { ("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/metrics"), ("POST", "/tokenize") })
        {
            var r = await bare.SendAsync(new HttpRequestMessage(new HttpMethod(method), path) { Content = method == "POST" ? new StringContent("{}") : null });
            Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode);
            var error = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
            Assert.Equal("invalid_api_key", error.GetProperty("code").GetString());
            Assert.Equal("Bearer", r.Headers.WwwAuthenticate.Single().Scheme);
        }
        bare.DefaultRequestHeaders.Authorization = new("Bearer", Key + "x");
        Assert.Equal(HttpStatusCode.Unauthorized, (await bare.GetAsync("/v1/models")).StatusCode);
        // /health stays open (load balancers), everything else works with the key.
        bare.DefaultRequestHeaders.Authorization = null;
        Assert.Equal(HttpStatusCode.OK, (await bare.GetAsync("/health")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.Http.GetAsync("/v1/models")).StatusCode);

        var options = new OpenAIClientOptions { Endpoint = new Uri(server.BaseAddress, "v1"), RetryPolicy = new ClientRetryPolicy(0) };
        var wrong = new ChatClient(TestServer.ModelId, new ApiKeyCredential("sk-wrong"), options);
        var e = await Assert.ThrowsAsync<ClientResultException>(() => wrong.CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(401, e.Status);
        var right = new ChatClient(TestServer.ModelId, new ApiKeyCredential(Key), options);
        ChatCompletion c = await right.CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { MaxOutputTokenCount = 3 });
        Assert.Equal(3, c.Usage.OutputTokenCount);
    }

    [Theory]
    [InlineData("0.0.0.0")]
    [InlineData("::")]
    [InlineData("192.0.2.1")]
    public void ANonLoopbackAddressWithoutAKeyIsRefused(string host)
    {
        using var engine = new InferenceEngine(new Model.Transformer(Stories.Weights, new Tensors.Parallelism(1), 64), Stories.Tokenizer,
            new EngineOptions { Kv = Cache.KvCacheConfig.Parse("f16"), KvBudgetBytes = 1 << 20 });
        var e = Assert.Throws<ArgumentException>(() => KvqServer.Create(engine, new KvqServerOptions { ModelId = "m", Host = host, Port = 0 }));
        Assert.Contains("API key", e.Message);
        Assert.Throws<ArgumentException>(() => KvqServer.Create(engine, new KvqServerOptions { ModelId = "m", Host = "example.com", Port = 0, ApiKey = "k" }));
    }

    private static readonly Lazy<Model.LoadedModel> StoriesModel = new(() => Model.ModelLoader.Load(Kvq.Tests.Fixtures.StoriesGguf));
    private static Model.LoadedModel Stories => StoriesModel.Value;
}
