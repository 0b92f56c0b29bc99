using System.Net.Http.Headers;
using System.Text;
using Kvq.Cache;
using Kvq.Model;
using Kvq.Serving;
using Kvq.Tensors;
using Kvq.Tests;

namespace Kvq.Server.Tests;

/// <summary>The chat prompt of these tests: a ChatML Jinja template through the real renderer (Kvq.Chat), which
/// refuses (raise_exception) any message containing "RAISE".</summary>
internal static class ChatMl
{
    public const string Source =
        "{% for message in messages %}" +
        "{% if 'RAISE' in message['content'] %}{{ raise_exception('the template refused: RAISE is not allowed') }}{% endif %}" +
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}" +
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    public static IChatPrompt For(Tokenizers.ITokenizer tokenizer) => TemplateChatPrompt.Parse(Source, tokenizer);
}

/// <summary>A real Kestrel server on a free loopback port over stories260K, and an HttpClient pointed at it.</summary>
public sealed class TestServer : IAsyncDisposable
{
    private static readonly Lazy<LoadedModel> Stories = new(() => ModelLoader.Load(Fixtures.StoriesGguf));
    public const string ModelId = "stories260K";

    private TestServer(InferenceEngine engine, KvqServer server, HttpClient http)
    {
        Engine = engine;
        Server = server;
        Http = http;
    }

    public InferenceEngine Engine { get; }
    public KvqServer Server { get; }
    public HttpClient Http { get; }
    public Uri BaseAddress => Server.BaseAddress;

    public static async Task<TestServer> StartAsync(Func<KvqServerOptions, KvqServerOptions>? configure = null, bool chat = true,
        long kvBudget = 8 << 20, int maxRunning = 64, string? promptCacheDir = null, Func<EngineOptions, EngineOptions>? engineOptions = null)
    {
        var m = Stories.Value;
        var engineSettings = new EngineOptions
        {
            Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = kvBudget, MaxRunning = maxRunning,
            PromptCache = promptCacheDir == null ? null
                : new PromptCacheStore(promptCacheDir, ModelIdentity.Of(m).Session),
        };
        var engine = new InferenceEngine(new Transformer(m.Weights, new Parallelism(2), 128), m.Tokenizer,
            engineOptions == null ? engineSettings : engineOptions(engineSettings));
        var options = new KvqServerOptions { ModelId = ModelId, Port = 0, ChatPrompt = chat ? ChatMl.For(m.Tokenizer) : null };
        if (configure != null) options = configure(options);
        KvqServer server;
        try { server = KvqServer.Create(engine, options); }
        catch
        {
            engine.Dispose();
            throw;
        }
        await server.StartAsync();
        var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        if (options.ApiKey != null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", options.ApiKey);
        return new TestServer(engine, server, http);
    }

    public Task<HttpResponseMessage> PostJsonAsync(string path, string json) =>
        Http.PostAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));

    /// <summary>Waits (bounded) until the engine holds no blocks and runs nothing: every request's blocks are back.</summary>
    public async Task WaitIdleAsync(TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(10));
        while (true)
        {
            var s = Engine.Snapshot();
            if (Engine.Pool.Cache.Sequences.Pool.HeldBlockCount == 0 && s.Running == 0 && s.Waiting == 0) return;
            if (DateTime.UtcNow > deadline)
                Assert.Fail($"the engine did not go idle: {Engine.Pool.Cache.Sequences.Pool.HeldBlockCount} blocks held, {s.Running} running, {s.Waiting} waiting");
            await Task.Delay(20);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.StopAsync();
        await Server.DisposeAsync();
        Engine.Dispose();
    }
}
