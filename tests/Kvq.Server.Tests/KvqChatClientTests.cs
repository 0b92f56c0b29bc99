using Kvq.Cache;
using Kvq.Extensions.AI;
using Kvq.Model;
using Kvq.Serving;
using Kvq.Tensors;
using Kvq.Tests;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;

namespace Kvq.Server.Tests;

/// <summary>The IChatClient over an engine on stories260K.</summary>
public sealed class KvqChatClientTests : IDisposable
{
    private static readonly Lazy<LoadedModel> Stories = new(() => ModelLoader.Load(Fixtures.StoriesGguf));
    private readonly InferenceEngine _engine;
    private readonly KvqChatClient _client;

    public KvqChatClientTests()
    {
        var m = Stories.Value;
        _engine = new InferenceEngine(new Transformer(m.Weights, new Parallelism(2), 128), m.Tokenizer,
            new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 4 << 20 });
        _client = new KvqChatClient(_engine, ChatMl.For(Stories.Value.Tokenizer), new KvqChatClientOptions { ModelId = "stories260K" });
    }

    public void Dispose()
    {
        _client.Dispose();
        _engine.Dispose();
    }

    private static ChatOptions Greedy(int max) => new() { MaxOutputTokens = max, Temperature = 0 };

    [Fact]
    public async Task AResponseCarriesTextUsageAndFinishReason()
    {
        var r = await _client.GetResponseAsync([new ChatMessage(ChatRole.System, "Tell stories."), new ChatMessage(ChatRole.User, "Once upon a time")], Greedy(10));
        Assert.NotEmpty(r.Text);
        Assert.Equal(ChatRole.Assistant, r.Messages.Single().Role);
        Assert.Equal(ChatFinishReason.Length, r.FinishReason);
        Assert.Equal(10, r.Usage!.OutputTokenCount);
        Assert.Equal(r.Usage.InputTokenCount + 10, r.Usage.TotalTokenCount);
        Assert.Equal("stories260K", r.ModelId);
        Assert.Equal("stories260K", _client.GetService<ChatClientMetadata>()!.DefaultModelId);
    }

    [Fact]
    public async Task StreamingGivesTheSameTextThenUsageAndFinishReason()
    {
        List<ChatMessage> messages = [new(ChatRole.User, "Lily had a red ball")];
        var whole = await _client.GetResponseAsync(messages, Greedy(15));
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in _client.GetStreamingResponseAsync(messages, Greedy(15))) updates.Add(u);
        Assert.Equal(whole.Text, string.Concat(updates.Select(u => u.Text)));
        var last = updates[^1];
        Assert.Equal(ChatFinishReason.Length, last.FinishReason);
        var usage = Assert.Single(last.Contents.OfType<UsageContent>());
        Assert.Equal(15, usage.Details.OutputTokenCount);
        // The updates make the same response.
        var combined = updates.ToChatResponse();
        Assert.Equal(whole.Text, combined.Text);
        Assert.Equal(15, combined.Usage!.OutputTokenCount);
    }

    [Fact]
    public async Task StopSequencesSeedsAndModelId()
    {
        List<ChatMessage> messages = [new(ChatRole.User, "Once upon a time")];
        var full = (await _client.GetResponseAsync(messages, Greedy(40))).Text;
        var stop = full.Substring(full.IndexOf(' ', full.Length / 2), 3);
        var options = Greedy(40);
        options.StopSequences = [stop];
        var cut = await _client.GetResponseAsync(messages, options);
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], cut.Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
        var seeded = new ChatOptions { MaxOutputTokens = 20, Temperature = 1, TopP = 0.9f, TopK = 30, Seed = 11 };
        Assert.Equal((await _client.GetResponseAsync(messages, seeded)).Text, (await _client.GetResponseAsync(messages, seeded.Clone())).Text);
        await Assert.ThrowsAsync<ArgumentException>(() => _client.GetResponseAsync(messages, new ChatOptions { ModelId = "gpt-4o" }));
    }

    /// <summary>With a ConversationId the client keeps the history: the next turn sends only its new message, and the
    /// engine serves the earlier turns' tokens from its prefix cache.</summary>
    [Fact]
    public async Task AConversationIdKeepsTheHistoryInThePrefixCache()
    {
        var options = Greedy(24);
        options.ConversationId = "c1";
        var first = await _client.GetResponseAsync([new ChatMessage(ChatRole.User,
            "Once upon a time there was a little girl named Lily who loved to play in the park with her big red ball every day")], options);
        Assert.Equal("c1", first.ConversationId);
        var second = await _client.GetResponseAsync([new ChatMessage(ChatRole.User, "What happened next?")], options);
        Assert.True(second.Usage!.InputTokenCount > first.Usage!.InputTokenCount + first.Usage.OutputTokenCount,
            "the second prompt holds the whole first turn");
        Assert.True(second.Usage.CachedInputTokenCount >= 32, $"cached {second.Usage.CachedInputTokenCount} prompt tokens");
        // Without the id nothing is kept.
        var fresh = await _client.GetResponseAsync([new ChatMessage(ChatRole.User, "What happened next?")], Greedy(4));
        Assert.True(fresh.Usage!.InputTokenCount < first.Usage.InputTokenCount);
    }

    [Fact]
    public async Task DependencyInjectionComposesWithTheBuilder()
    {
        var services = new ServiceCollection();
        services.AddKvqChatClient(_engine, ChatMl.For(Stories.Value.Tokenizer), new KvqChatClientOptions { ModelId = "stories260K" })
            .UseOpenTelemetry(sourceName: "kvq-test")
            .UseLogging();
        services.AddLogging();
        await using var provider = services.BuildServiceProvider();
        var client = provider.GetRequiredService<IChatClient>();
        Assert.IsNotType<KvqChatClient>(client); // wrapped by the pipeline
        Assert.NotNull(client.GetService<KvqChatClient>());
        var r = await client.GetResponseAsync("Once upon a time", Greedy(5));
        Assert.Equal(5, r.Usage!.OutputTokenCount);
    }
}
