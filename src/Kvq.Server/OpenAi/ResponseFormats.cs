using System.Text.Json;
using Kvq.Serving;
using Kvq.Tokenizers;

namespace Kvq.Server.OpenAi;

/// <summary>How one endpoint writes what the engine produced: stream chunks (SSE "data:" payloads) and the whole
/// answer. One instance per request (it carries the request's id and creation time).</summary>
internal interface IResponseFormat
{
    byte[]? Start();
    byte[]? Delta(TokenEvent e);
    byte[] End(FinishReason reason);
    byte[] UsageChunk(Usage usage);
    byte[] Whole(CompletionResult result, IReadOnlyList<TokenEvent> events);
}

internal static class Finish
{
    public static string Name(FinishReason r) => r == FinishReason.Stop ? "stop" : "length";

    public static Usage UsageOf(CompletionResult r) =>
        new(r.PromptTokens, r.CompletionTokens, r.PromptTokens + r.CompletionTokens, new PromptTokensDetails(r.CachedPromptTokens));

    public static long Now() => DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public static string NewId(string prefix) => prefix + Guid.NewGuid().ToString("N")[..24];
}

/// <summary>/v1/chat/completions: chat.completion and chat.completion.chunk objects.</summary>
internal sealed class ChatFormat(string model, ITokenizer tokenizer) : IResponseFormat
{
    private readonly string _id = Finish.NewId("chatcmpl-");
    private readonly long _created = Finish.Now();

    public byte[]? Start() => Chunk(new ChatChunkChoice(0, new ChatDelta("assistant", ""), null, null));

    public byte[]? Delta(TokenEvent e)
    {
        var logprobs = e.Token >= 0 && !float.IsNaN(e.Logprob) ? new ChatLogprobs([Entry(e)]) : null;
        if (e.Text.Length == 0 && logprobs == null) return null;
        return Chunk(new ChatChunkChoice(0, new ChatDelta(null, e.Text), logprobs, null));
    }

    public byte[] End(FinishReason reason) => Chunk(new ChatChunkChoice(0, new ChatDelta(null, null), null, Finish.Name(reason)));

    public byte[] UsageChunk(Usage usage) =>
        JsonSerializer.SerializeToUtf8Bytes(new ChatCompletionChunk(_id, "chat.completion.chunk", _created, model, [], usage), OpenAiJson.Default.ChatCompletionChunk);

    public byte[] Whole(CompletionResult result, IReadOnlyList<TokenEvent> events)
    {
        var entries = events.Where(e => e.Token >= 0 && !float.IsNaN(e.Logprob)).Select(Entry).ToList();
        var choice = new ChatChoice(0, new AssistantMessage("assistant", result.Text), entries.Count > 0 ? new ChatLogprobs(entries) : null,
            Finish.Name(result.FinishReason));
        return JsonSerializer.SerializeToUtf8Bytes(new ChatCompletion(_id, "chat.completion", _created, model, [choice], Finish.UsageOf(result)),
            OpenAiJson.Default.ChatCompletion);
    }

    private byte[] Chunk(ChatChunkChoice choice) =>
        JsonSerializer.SerializeToUtf8Bytes(new ChatCompletionChunk(_id, "chat.completion.chunk", _created, model, [choice]), OpenAiJson.Default.ChatCompletionChunk);

    private ChatTokenLogprob Entry(TokenEvent e) =>
        new(TokenText.Of(tokenizer, e.Token), e.Logprob, TokenText.Bytes(tokenizer, e.Token),
            (e.TopLogprobs ?? []).Select(t => new ChatTopLogprob(t.Text, t.Logprob, TokenText.Bytes(tokenizer, t.Token))).ToList());
}

/// <summary>/v1/completions: text_completion objects, whole or streamed.</summary>
internal sealed class TextFormat(string model, ITokenizer tokenizer) : IResponseFormat
{
    private readonly string _id = Finish.NewId("cmpl-");
    private readonly long _created = Finish.Now();
    private int _offset;

    public byte[]? Start() => null;

    public byte[]? Delta(TokenEvent e)
    {
        var logprobs = e.Token >= 0 && !float.IsNaN(e.Logprob) ? Logprobs([e], ref _offset) : null;
        if (e.Text.Length == 0 && logprobs == null) return null;
        return Serialize(new TextCompletion(_id, "text_completion", _created, model, [new TextChoice(0, e.Text, logprobs, null)]));
    }

    public byte[] End(FinishReason reason) =>
        Serialize(new TextCompletion(_id, "text_completion", _created, model, [new TextChoice(0, "", null, Finish.Name(reason))]));

    public byte[] UsageChunk(Usage usage) => Serialize(new TextCompletion(_id, "text_completion", _created, model, [], usage));

    public byte[] Whole(CompletionResult result, IReadOnlyList<TokenEvent> events)
    {
        int offset = 0;
        var scored = events.Where(e => e.Token >= 0 && !float.IsNaN(e.Logprob)).ToList();
        var logprobs = scored.Count > 0 ? Logprobs(scored, ref offset) : null;
        return Serialize(new TextCompletion(_id, "text_completion", _created, model,
            [new TextChoice(0, result.Text, logprobs, Finish.Name(result.FinishReason))], Finish.UsageOf(result)));
    }

    private TextLogprobs Logprobs(IReadOnlyList<TokenEvent> events, ref int offset)
    {
        var tokens = new List<string>();
        var lps = new List<float>();
        var offsets = new List<int>();
        List<Dictionary<string, float>>? top = events.Any(e => e.TopLogprobs is { Count: > 0 }) ? [] : null;
        foreach (var e in events)
        {
            var text = TokenText.Of(tokenizer, e.Token);
            tokens.Add(text);
            lps.Add(e.Logprob);
            offsets.Add(offset);
            offset += text.Length;
            if (top != null)
            {
                var d = new Dictionary<string, float>();
                foreach (var t in e.TopLogprobs ?? []) d.TryAdd(t.Text, t.Logprob);
                top.Add(d);
            }
        }
        return new TextLogprobs(tokens, lps, top, offsets);
    }

    private static byte[] Serialize(TextCompletion c) => JsonSerializer.SerializeToUtf8Bytes(c, OpenAiJson.Default.TextCompletion);
}

internal static class TokenText
{
    public static string Of(ITokenizer tokenizer, int token) => TokenDecoder.Decode(tokenizer, [token]);

    /// <summary>The token's UTF-8 bytes as OpenAI lists them (integers, so partial characters survive).</summary>
    public static int[] Bytes(ITokenizer tokenizer, int token)
    {
        var bytes = tokenizer.TokenBytes(token);
        var list = new int[bytes.Length];
        for (int i = 0; i < list.Length; i++) list[i] = bytes[i];
        return list;
    }
}
