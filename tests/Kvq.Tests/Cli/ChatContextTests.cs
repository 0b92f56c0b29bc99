using Kvq.Cache;
using Kvq.Cli.Commands;
using Kvq.Sampling;
using Kvq.Serving;
using Kvq.Tests.Eval;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cli;

/// <summary>kvq chat past its context (the oldest messages dropped, said, and the conversation goes on), and the chat
/// and serve options checked as generate's are.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class ChatContextTests
{
    /// <summary>ChatML written out by hand (stands in for a template).</summary>
    private sealed class ChatMl : IChatPrompt
    {
        public string Render(IReadOnlyList<ChatTurn> messages) =>
            string.Concat(messages.Select(m => $"<|im_start|>{m.Role}\n{m.Content}<|im_end|>\n")) + "<|im_start|>assistant\n";
    }

    [Fact]
    public async Task ALongConversationDropsTheOldestMessagesAndGoesOn()
    {
        var m = EngineFixtures.Stories;
        const int context = 256;
        using var engine = new InferenceEngine(EngineFixtures.Model(m), m.Tokenizer,
            new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 4 << 20, ContextTokens = context });
        string[] turns =
        [
            "Once upon a time there was a little girl named Lily who loved to play in the park",
            "One day she found a big red ball under a tree and wanted to show her mom",
            "Her mom smiled and said they could play with the ball after lunch in the garden",
            "After lunch Lily and her mom went outside and played until the sun went down",
            "Then they went home, had a warm bath and read a story about a brave little dog",
        ];
        var status = new StringWriter();
        var settings = new ChatSession.Settings { ModelId = "stories260K", MaxTokens = 24, Sampler = SamplerOptions.Greedy, SystemPrompt = "Tell stories." };
        var session = new ChatSession(engine, new ChatMl(), settings, new StringReader(string.Join('\n', turns) + "\n"), new StringWriter(), status);
        await session.RunAsync();
        var log = status.ToString();
        // Every turn was answered (one stats line each), none refused for length.
        Assert.Equal(turns.Length, log.Split('\n').Count(l => l.StartsWith('[')));
        Assert.DoesNotContain("cannot answer", log);
        Assert.Contains($"(the conversation outgrew the {context}-token context: dropped the oldest 2 messages)", log);
        // The system prompt stays first; the newest exchange is there; the first turn is gone.
        Assert.Equal(new ChatTurn("system", "Tell stories."), session.History[0]);
        Assert.Equal(turns[^1], session.History[^2].Content);
        Assert.Equal("assistant", session.History[^1].Role);
        Assert.DoesNotContain(session.History, t => t.Content == turns[0]);
        // What is kept fits with room for an answer.
        var prompt = ChatPrompts.Encode(m.Tokenizer, new ChatMl().Render(session.History.Take(session.History.Count - 1).ToList()));
        Assert.True(prompt.Length + 24 <= context, $"{prompt.Length} prompt tokens");
        Assert.Equal(0, engine.Pool.Cache.Sequences.Pool.HeldBlockCount);
    }

    [Theory]
    [InlineData("--temperature -1", "--temperature -1: expected a number >= 0 (0 = greedy)")]
    [InlineData("--top-p 2", "--top-p 2: expected a number in (0, 1] (1 = off)")]
    [InlineData("--min-p 1.5", "--min-p 1.5: expected a number in [0, 1] (0 = off)")]
    [InlineData("--top-k -1", "--top-k -1: expected a whole number >= 0 (0 = off)")]
    [InlineData("-n 0", "-n 0: expected a whole number from 1 to 2147483647")]
    [InlineData("--seed -2", "--seed -2: expected a whole number >= -1 (-1 = random)")]
    [InlineData("--ctx 4096", "--ctx 4096 is longer than the model's context (2048 tokens, the length it was trained on)")]
    [InlineData("--ctx 1", "--ctx 1: expected a whole number from 2 to")]
    public void ChatRefusesBadValues(string option, string expected) =>
        InProcessCli.AssertUserError(InProcessCli.Run(["chat", "-m", Fixtures.StoriesGguf, .. option.Split(' ')]), expected);

    [Fact]
    public void ServeRefusesAContextPastTheModels() =>
        InProcessCli.AssertUserError(InProcessCli.Run("serve", "-m", Fixtures.StoriesGguf, "--ctx", "100000"),
            "--ctx 100000 is longer than the model's context (2048 tokens, the length it was trained on)");
}
