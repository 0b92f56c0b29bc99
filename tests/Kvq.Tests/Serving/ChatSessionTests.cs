using System.Text.Json;
using Kvq.Cli.Commands;
using Kvq.Sampling;
using Kvq.Serving;

namespace Kvq.Tests.Serving;

/// <summary>kvq chat's session driven in process: stdin lines in, answers and status out.</summary>
public sealed class ChatSessionTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-chat-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>ChatML written out by hand (stands in for a template).</summary>
    private sealed class ChatMl : IChatPrompt
    {
        public string Render(IReadOnlyList<ChatTurn> messages) =>
            string.Concat(messages.Select(m => $"<|im_start|>{m.Role}\n{m.Content}<|im_end|>\n")) + "<|im_start|>assistant\n";
    }

    /// <summary>Output that calls back on each write (to press "Ctrl-C" mid-answer).</summary>
    private sealed class Watched : StringWriter
    {
        public Action<string>? OnWrite;
        public override void Write(string? value)
        {
            base.Write(value);
            if (!string.IsNullOrEmpty(value)) OnWrite?.Invoke(value);
        }
    }

    private static ChatSession.Settings Greedy(int maxTokens) => new() { ModelId = "stories260K", MaxTokens = maxTokens, Sampler = SamplerOptions.Greedy, SystemPrompt = "Tell stories." };

    [Fact]
    public async Task TurnsReuseTheCachedHistoryAndResetAndSaveWork()
    {
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f16", 4 << 20);
        var file = Path.Combine(_dir, "talk.json");
        var input = new StringReader(
            "Once upon a time there was a little girl named Lily who loved to play in the park with her big red ball\n" +
            "What happened next?\n" +
            $"/save {file}\n" +
            "/reset\n" +
            "/nonsense\n" +
            "/exit\n" +
            "never read\n");
        var output = new StringWriter();
        var status = new StringWriter();
        var session = new ChatSession(engine, new ChatMl(), Greedy(24), input, output, status);
        await session.RunAsync();
        var lines = status.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var stats = lines.Where(l => l.StartsWith('[')).ToList();
        Assert.Equal(2, stats.Count);
        Assert.Contains("of which 0 cached", stats[0]);
        // The second turn's prompt starts with the whole first turn: its full blocks come from the prefix cache.
        int cached = int.Parse(stats[1].Split("of which ")[1].Split(' ')[0]);
        Assert.True(cached >= 32, stats[1]);
        Assert.Contains("(conversation cleared)", status.ToString());
        Assert.Contains("commands:", status.ToString());
        // /reset leaves only the system prompt.
        Assert.Equal([new ChatTurn("system", "Tell stories.")], session.History);
        var saved = JsonDocument.Parse(File.ReadAllText(file)).RootElement;
        Assert.Equal("stories260K", saved.GetProperty("model").GetString());
        var roles = saved.GetProperty("messages").EnumerateArray().Select(m => m.GetProperty("role").GetString()!).ToArray();
        Assert.Equal(["system", "user", "assistant", "user", "assistant"], roles);
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
        Assert.Equal(0, engine.Pool.Cache.Sequences.Pool.HeldBlockCount);
    }

    [Fact]
    public async Task AnUnknownCommandIsNamedAsUnknownAndHelpIsNot()
    {
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f16", 4 << 20);
        var input = new StringReader("/help\n/bogus extra words\n/Reset\n/exit\n");
        var status = new StringWriter();
        var session = new ChatSession(engine, new ChatMl(), Greedy(8), input, new StringWriter(), status);
        await session.RunAsync();
        var lines = status.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        // The banner, then /help: the list alone; /bogus and /Reset (commands are case-sensitive): named, then the list.
        Assert.Equal(["commands: /reset (start over), /save FILE (the conversation as JSON), /help, /exit",
                      "(unknown command '/bogus')",
                      "commands: /reset (start over), /save FILE (the conversation as JSON), /help, /exit",
                      "(unknown command '/Reset')",
                      "commands: /reset (start over), /save FILE (the conversation as JSON), /help, /exit"], lines[1..]);
        Assert.StartsWith("kvq chat: stories260K;", lines[0]);
    }

    [Fact]
    public async Task CtrlCStopsTheAnswerNotTheSession()
    {
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f16", 4 << 20);
        var input = new StringReader("Tell me a long story\nAnd another\n");
        var output = new Watched();
        var status = new StringWriter();
        var session = new ChatSession(engine, new ChatMl(), Greedy(1500) with { Sampler = new SamplerOptions { Seed = 3 } }, input, output, status);
        int writes = 0;
        output.OnWrite = _ =>
        {
            if (++writes == 5) Assert.True(session.CancelAnswer());
        };
        await session.RunAsync();
        Assert.Contains("(stopped)", status.ToString());
        // Both questions were answered: the stop ended the first answer only.
        Assert.Equal(["user", "assistant", "user", "assistant"], session.History.Select(t => t.Role).Skip(1));
        Assert.False(session.CancelAnswer());
        Assert.Equal(0, engine.Pool.Cache.Sequences.Pool.HeldBlockCount);
    }

    [Fact]
    public async Task APromptOverTheContextIsReportedAndForgotten()
    {
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f16", 4 << 20);
        var huge = string.Concat(Enumerable.Repeat("the dog ran far away. ", engine.ContextTokens / 3));
        var status = new StringWriter();
        var session = new ChatSession(engine, new ChatMl(), Greedy(4), new StringReader(huge + "\nhi\n"), new StringWriter(), status);
        await session.RunAsync();
        Assert.Contains("(cannot answer:", status.ToString());
        Assert.Equal(["system", "user", "assistant"], session.History.Select(t => t.Role));
    }
}

/// <summary>`kvq chat` end to end through Program.Main, stdin and stdout redirected: with the model's own template
/// (a GGUF carrying tokenizer.chat_template) and with --chat-template FILE.</summary>
[Collection(Eval.ConsoleCollection.Name)]
public sealed class ChatCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-chat-cli-").FullName;

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private const string ChatMl = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}" +
                                  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    private static (int Code, string Out, string Err) Chat(string stdin, params string[] args) =>
        Eval.InProcessCli.RunWithInput(stdin, ["chat", .. args]);

    [Fact]
    public void ChatsWithTheTemplateInTheModelFile()
    {
        var model = Model.TinyModelWriter.Write(new Model.TinyModelSpec(), _dir, w => w.Add(Kvq.Chat.ChatTemplates.GgufKey, ChatMl));
        var save = Path.Combine(_dir, "c.json");
        var r = Chat($"Hello there\nAnd again\n/save {save}\n", "--model", model, "--max-tokens", "5", "--temperature", "0", "--threads", "1");
        Assert.True(r.Code == 0, r.Err);
        Assert.Equal(2, r.Err.Split('\n').Count(l => l.StartsWith("[5 tokens", StringComparison.Ordinal)));
        Assert.StartsWith("> ", r.Out);
        var saved = JsonDocument.Parse(File.ReadAllText(save)).RootElement.GetProperty("messages");
        Assert.Equal(4, saved.GetArrayLength());
        Assert.Equal("And again", saved[2].GetProperty("content").GetString());
    }

    [Fact]
    public void ChatsWithATemplateFileAndRefusesAModelWithout()
    {
        var template = Path.Combine(_dir, "chatml.jinja");
        File.WriteAllText(template, ChatMl);
        var r = Chat("Once upon a time\n/exit\n", "--model", Fixtures.StoriesGguf, "--chat-template", template, "--max-tokens", "8", "--threads", "1");
        Assert.True(r.Code == 0, r.Err);
        Assert.True(r.Err.Contains("[8 tokens"), r.Err + "\nOUT:" + r.Out);
        Eval.InProcessCli.AssertUserError(Chat("hi\n", "--model", Fixtures.StoriesGguf), "no chat template");
        File.WriteAllText(template, "{% if %}");
        Eval.InProcessCli.AssertUserError(Chat("hi\n", "--model", Fixtures.StoriesGguf, "--chat-template", template), "--chat-template");
    }
}
