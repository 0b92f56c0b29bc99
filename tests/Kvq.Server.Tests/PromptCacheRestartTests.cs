using System.ClientModel;
using System.ClientModel.Primitives;
using OpenAI;
using OpenAI.Chat;

namespace Kvq.Server.Tests;

/// <summary>The server's prompt cache survives a restart (<c>kvq serve --prompt-cache DIR</c>): a second server over
/// the same folder answers a repeated chat with its prompt's whole blocks cached, and with the same text.</summary>
public sealed class PromptCacheRestartTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-server-prompt-cache-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static ChatClient Client(TestServer server) => new(TestServer.ModelId, new ApiKeyCredential("unused"),
        new OpenAIClientOptions { Endpoint = new Uri(server.BaseAddress, "v1"), RetryPolicy = new ClientRetryPolicy(0) });

    [Fact]
    public async Task ARepeatedChatAfterARestartFindsItsPromptCached()
    {
        ChatMessage[] messages =
        [
            new SystemChatMessage("You tell short stories about a girl named Lily, her dog Max and the big red ball they found in the park " +
                                  "one sunny morning. Every story is happy and ends with a nap under the old oak tree."),
            new UserChatMessage("Once upon a time, Lily and Max went to the park"),
        ];
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 8, Temperature = 0 };
        ChatCompletion before;
        await using (var server = await TestServer.StartAsync(promptCacheDir: _dir))
        {
            before = await Client(server).CompleteChatAsync(messages, options);
            Assert.Equal(0, before.Usage.InputTokenDetails?.CachedTokenCount ?? 0);
            await server.WaitIdleAsync();
        }
        Assert.NotEmpty(Directory.GetFiles(_dir, "*.kvqs", SearchOption.AllDirectories));

        await using var restarted = await TestServer.StartAsync(promptCacheDir: _dir);
        Assert.Equal(1, restarted.Engine.Options.PromptCache!.LastLoad!.Prefixes);
        ChatCompletion after = await Client(restarted).CompleteChatAsync(messages, options);
        int blockTokens = restarted.Engine.Pool.BlockTokens;
        int expected = (before.Usage.InputTokenCount - 1) / blockTokens * blockTokens;
        Assert.True(expected > 0, $"the prompt ({before.Usage.InputTokenCount} tokens) must fill a block of {blockTokens}");
        Assert.Equal(expected, after.Usage.InputTokenDetails!.CachedTokenCount);
        Assert.Equal(before.Content[0].Text, after.Content[0].Text);
    }
}
