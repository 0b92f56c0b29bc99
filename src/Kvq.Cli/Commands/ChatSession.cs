using System.Diagnostics;
using System.Text.Json;
using Kvq.IO;
using Kvq.Sampling;
using Kvq.Serving;

namespace Kvq.Cli.Commands;

/// <summary>
/// An interactive conversation over an engine, line by line from <c>input</c>: each turn re-sends the whole history
/// (rendered with the chat template), so the engine's prefix cache serves the earlier turns' tokens and only the new
/// ones are computed. Commands: /reset, /save FILE, /help, /exit. <see cref="CancelAnswer"/> (Ctrl-C) stops the
/// answer being written, not the session; the part written stays in the history. When the history outgrows the engine's
/// context (leaving less than the answer's room), the oldest messages after the system prompt are dropped, and said:
/// chat's context shift, so a long conversation goes on.
/// </summary>
public sealed class ChatSession(InferenceEngine engine, IChatPrompt prompt, ChatSession.Settings settings,
    TextReader input, TextWriter output, TextWriter status)
{
    public sealed record Settings
    {
        public string ModelId { get; init; } = "kvq";
        public string? SystemPrompt { get; init; }
        public int MaxTokens { get; init; } = 512;
        public SamplerOptions Sampler { get; init; } = new();
    }

    private readonly List<ChatTurn> _history = [];
    private CancellationTokenSource? _answer;
    private readonly Lock _lock = new();

    public IReadOnlyList<ChatTurn> History => _history;

    /// <summary>Stops the answer being generated (if any); true when there was one.</summary>
    public bool CancelAnswer()
    {
        lock (_lock)
        {
            if (_answer == null) return false;
            _answer.Cancel();
            return true;
        }
    }

    /// <summary>Runs until /exit or the end of input.</summary>
    public async Task RunAsync()
    {
        Reset();
        status.WriteLine($"kvq chat: {settings.ModelId}; /help for commands, Ctrl-C stops an answer, Ctrl-D or /exit quits");
        while (true)
        {
            output.Write("> ");
            output.Flush();
            var line = await input.ReadLineAsync();
            if (line == null) break;
            line = line.Trim();
            if (line.Length == 0) continue;
            if (line.StartsWith('/'))
            {
                if (!Command(line)) break;
                continue;
            }
            await AnswerAsync(line);
        }
        output.WriteLine();
    }

    private void Reset()
    {
        _history.Clear();
        if (!string.IsNullOrWhiteSpace(settings.SystemPrompt)) _history.Add(new ChatTurn("system", settings.SystemPrompt));
    }

    private const string Commands = "commands: /reset (start over), /save FILE (the conversation as JSON), /help, /exit";

    /// <summary>A /command; false to quit.</summary>
    private bool Command(string line)
    {
        var parts = line.Split(' ', 2, StringSplitOptions.TrimEntries);
        switch (parts[0])
        {
            case "/exit" or "/quit":
                return false;
            case "/reset":
                Reset();
                status.WriteLine("(conversation cleared)");
                return true;
            case "/save" when parts.Length == 2 && parts[1].Length > 0:
                try
                {
                    Save(parts[1]);
                    status.WriteLine($"(saved {_history.Count} messages to {parts[1]})");
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
                {
                    status.WriteLine($"(cannot save to {parts[1]}: {e.Message})");
                }
                return true;
            case "/save":
                status.WriteLine("(usage: /save FILE)");
                return true;
            case "/help":
                status.WriteLine(Commands);
                return true;
            default:
                status.WriteLine($"(unknown command '{parts[0]}')");
                status.WriteLine(Commands);
                return true;
        }
    }

    private async Task AnswerAsync(string text)
    {
        _history.Add(new ChatTurn("user", text));
        RequestStream stream;
        using var cancel = new CancellationTokenSource();
        try
        {
            var (tokens, kept, dropped) = Within(_history);
            lock (_lock) _answer = cancel;
            stream = engine.Submit(new CompletionRequest { PromptTokens = tokens, MaxTokens = settings.MaxTokens, Sampler = settings.Sampler }, cancel.Token);
            if (dropped > 0)
            {
                _history.Clear();
                _history.AddRange(kept);
                status.WriteLine($"(the conversation outgrew the {Context}-token context: dropped the oldest {dropped} messages)");
            }
        }
        catch (Exception e) when (e is ChatPromptException or EngineRequestException)
        {
            _history.RemoveAt(_history.Count - 1);
            lock (_lock) _answer = null;
            status.WriteLine($"(cannot answer: {e.Message})");
            return;
        }
        var clock = Stopwatch.StartNew();
        try
        {
            await foreach (var e in stream)
            {
                output.Write(e.Text);
                output.Flush();
            }
            var result = await stream.Completion;
            _history.Add(new ChatTurn("assistant", result.Text));
            output.WriteLine();
            if (result.FinishReason == FinishReason.Cancelled) status.WriteLine("(stopped)");
            double seconds = Math.Max(1e-9, clock.Elapsed.TotalSeconds - (result.TimeToFirstToken?.TotalSeconds ?? 0));
            status.WriteLine($"[{result.CompletionTokens} tokens, {(result.CompletionTokens > 1 ? (result.CompletionTokens - 1) / seconds : 0):F1} tok/s, " +
                             $"prompt {result.PromptTokens} tokens of which {result.CachedPromptTokens} cached{(result.FinishReason == FinishReason.Length ? ", cut at --max-tokens" : "")}]");
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            output.WriteLine();
            _history.RemoveAt(_history.Count - 1);
            status.WriteLine($"(the answer failed: {e.Message})");
        }
        finally
        {
            lock (_lock) _answer = null;
        }
    }

    private int Context => engine.Options.ContextTokens ?? engine.Model.Config.ContextLength;

    /// <summary>The prompt of <paramref name="history"/>, or of the history without its oldest messages after the system
    /// prompt (a user message with its answer at a time) when it would leave less than the answer's room
    /// (--max-tokens, at most half the context); the newest message always stays.</summary>
    private (int[] Tokens, List<ChatTurn> Kept, int Dropped) Within(IReadOnlyList<ChatTurn> history)
    {
        int room = Math.Min(settings.MaxTokens, Context / 2);
        var kept = new List<ChatTurn>(history);
        int first = kept.Count > 0 && kept[0].Role == "system" ? 1 : 0, dropped = 0;
        while (true)
        {
            var tokens = ChatPrompts.Encode(engine.Tokenizer, prompt.Render(kept));
            if (tokens.Length + room <= Context || kept.Count - first <= 1) return (tokens, kept, dropped);
            kept.RemoveAt(first);
            dropped++;
            if (kept.Count - first > 1 && kept[first].Role == "assistant")
            {
                kept.RemoveAt(first);
                dropped++;
            }
        }
    }

    /// <summary>The conversation as JSON ({"model", "messages": [{"role", "content"}]}), written atomically.</summary>
    private void Save(string path) => AtomicFile.Write(path, s =>
    {
        using var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("model", settings.ModelId);
        w.WriteStartArray("messages");
        foreach (var t in _history)
        {
            w.WriteStartObject();
            w.WriteString("role", t.Role);
            w.WriteString("content", t.Content);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    });
}
