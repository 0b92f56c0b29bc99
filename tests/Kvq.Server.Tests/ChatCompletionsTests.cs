using System.ClientModel;
using System.ClientModel.Primitives;
using System.Text;
using OpenAI;
using OpenAI.Chat;

namespace Kvq.Server.Tests;

/// <summary>/v1/chat/completions through the official OpenAI .NET SDK against a real Kestrel server.</summary>
public sealed class ChatCompletionsTests : IAsyncLifetime
{
    private TestServer _server = null!;

    public async Task InitializeAsync() => _server = await TestServer.StartAsync();
    public async Task DisposeAsync() => await _server.DisposeAsync();

    private ChatClient Client(string key = "unused") => new(TestServer.ModelId, new ApiKeyCredential(key),
        new OpenAIClientOptions { Endpoint = new Uri(_server.BaseAddress, "v1"), RetryPolicy = new ClientRetryPolicy(0) });

    private static ChatCompletionOptions Greedy(int maxTokens) => new() { MaxOutputTokenCount = maxTokens, Temperature = 0 };

    [Fact]
    public async Task NonStreamingChatAnswersWithUsageAndFinishReason()
    {
        ChatCompletion c = await Client().CompleteChatAsync([new SystemChatMessage("Tell stories."), new UserChatMessage("Once upon a time")], Greedy(12));
        Assert.Equal(ChatMessageRole.Assistant, c.Role);
        Assert.NotEmpty(c.Content[0].Text);
        Assert.Equal(ChatFinishReason.Length, c.FinishReason);
        Assert.Equal(12, c.Usage.OutputTokenCount);
        Assert.True(c.Usage.InputTokenCount > 10);
        Assert.Equal(c.Usage.InputTokenCount + c.Usage.OutputTokenCount, c.Usage.TotalTokenCount);
        Assert.StartsWith("chatcmpl-", c.Id);
        Assert.Equal(TestServer.ModelId, c.Model);
        await _server.WaitIdleAsync();
    }

    [Fact]
    public async Task StreamingChatGivesTheSameGreedyTextAndUsage()
    {
        var messages = new List<ChatMessage> { new UserChatMessage("Lily had a red ball") };
        ChatCompletion whole = await Client().CompleteChatAsync(messages, Greedy(16));
        var text = new StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        await foreach (var update in Client().CompleteChatStreamingAsync(messages, Greedy(16)))
        {
            foreach (var part in update.ContentUpdate) text.Append(part.Text);
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }
        Assert.Equal(whole.Content[0].Text, text.ToString());
        Assert.Equal(ChatFinishReason.Length, finish);
        Assert.NotNull(usage); // the SDK asks for stream_options.include_usage
        Assert.Equal(16, usage.OutputTokenCount);
        Assert.Equal(whole.Usage.InputTokenCount, usage.InputTokenCount);
    }

    [Fact]
    public async Task AStopStringEndsTheAnswerBeforeIt()
    {
        var messages = new List<ChatMessage> { new UserChatMessage("Once upon a time") };
        ChatCompletion free = await Client().CompleteChatAsync(messages, Greedy(40));
        var full = free.Content[0].Text;
        // A stop string from the middle of the greedy answer: the same answer, cut just before it.
        int at = full.IndexOf(' ', full.Length / 2);
        Assert.True(at > 0, $"answer too short to cut: '{full}'");
        string stop = full.Substring(at, Math.Min(4, full.Length - at));
        var options = Greedy(40);
        options.StopSequences.Add(stop);
        ChatCompletion stopped = await Client().CompleteChatAsync(messages, options);
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], stopped.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);
    }

    [Fact]
    public async Task LogprobsComeWithEachToken()
    {
        var options = Greedy(5);
        options.IncludeLogProbabilities = true;
        options.TopLogProbabilityCount = 3;
        ChatCompletion c = await Client().CompleteChatAsync([new UserChatMessage("The cat")], options);
        Assert.Equal(5, c.ContentTokenLogProbabilities.Count);
        foreach (var t in c.ContentTokenLogProbabilities)
        {
            Assert.True(t.LogProbability <= 0);
            Assert.Equal(3, t.TopLogProbabilities.Count);
            // Greedy: the chosen token is the most likely one.
            Assert.Equal(t.TopLogProbabilities[0].LogProbability, t.LogProbability, 4);
        }
    }

    [Fact]
    public async Task TheSdkSurfacesServerErrors()
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(() => Client().CompleteChatAsync([new UserChatMessage("hi")], Greedy(100000)));
        Assert.Equal(400, e.Status);
        Assert.Contains("max_completion_tokens", e.Message);
    }
}
