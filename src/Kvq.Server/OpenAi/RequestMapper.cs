using System.Text.Json;
using Kvq.Sampling;
using Kvq.Serving;

namespace Kvq.Server.OpenAi;

/// <summary>An OpenAI request turned into the engine's terms, with how to answer it.</summary>
internal sealed record Generation(CompletionRequest Request, bool Stream, bool IncludeUsage);

/// <summary>
/// OpenAI's request fields to the engine's <see cref="CompletionRequest"/>: the model name, limits, sampling settings
/// (OpenAI's defaults: temperature 1, top_p 1, no top-k or min-p, a fresh seed), stop strings, logprobs; fields Kvq
/// cannot honour are refused with a 400 naming them. Prompt checks against the context and the KV budget stay in the
/// engine (<see cref="InferenceEngine.Submit"/>).
/// </summary>
internal sealed class RequestMapper(InferenceEngine engine, KvqServerOptions options)
{
    private static readonly HashSet<string> Roles = ["system", "developer", "user", "assistant", "tool"];
    private const int MaxStops = 16;

    public void CheckModel(string? model)
    {
        if (model != null && model != options.ModelId)
            throw new ApiException(404, $"The model '{model}' does not exist: this server serves '{options.ModelId}'", "model", "model_not_found");
    }

    public Generation Chat(ChatCompletionRequest r)
    {
        CheckModel(r.Model);
        CheckN(r.N);
        if (r.Tools is { ValueKind: JsonValueKind.Array } tools && tools.GetArrayLength() > 0)
            throw Unsupported("tools", "tools (function calling) are not supported");
        if (r.ResponseFormat is { ValueKind: JsonValueKind.Object } rf && rf.TryGetProperty("type", out var t) && t.GetString() != "text")
            throw Unsupported("response_format", $"response_format '{t}' is not supported (only text)");
        CheckLogitBias(r.LogitBias);
        var prompt = options.ChatPrompt ?? throw new ApiException(400,
            $"the model '{options.ModelId}' has no chat template, so it cannot chat: use /v1/completions with a prompt, " +
            "or start the server with --chat-template FILE", "messages", "chat_template_missing");
        var turns = Messages(r.Messages);
        string text;
        try
        {
            text = prompt.Render(turns);
        }
        catch (ChatPromptException e) when (e.Refused)
        {
            throw new ApiException(400, e.Message, "messages", "invalid_value");
        }
        catch (ChatPromptException e)
        {
            throw new ApiException(500, $"the chat template failed on these messages: {e.Message}", null, "chat_template_error");
        }
        var tokens = ChatPrompts.Encode(engine.Tokenizer, text);
        if (r.TopLogprobs != null && r.Logprobs != true)
            throw new ApiException(400, "top_logprobs needs logprobs: true", "top_logprobs");
        var request = new CompletionRequest
        {
            PromptTokens = tokens,
            MaxTokens = MaxTokens(r.MaxCompletionTokens ?? r.MaxTokens, r.MaxCompletionTokens != null ? "max_completion_tokens" : "max_tokens"),
            Sampler = Sampler(r),
            StopStrings = Stops(r.Stop),
            Logprobs = r.Logprobs == true,
            TopLogprobs = r.TopLogprobs ?? 0,
        };
        return new Generation(request, r.Stream == true, r.StreamOptions?.IncludeUsage == true);
    }

    public Generation Completion(CompletionRequestDto r)
    {
        CheckModel(r.Model);
        CheckN(r.N);
        if (r.BestOf is not (null or 1)) throw Unsupported("best_of", "best_of other than 1 is not supported");
        if (r.Echo == true) throw Unsupported("echo", "echo is not supported");
        if (!string.IsNullOrEmpty(r.Suffix)) throw Unsupported("suffix", "suffix (insertion) is not supported");
        CheckLogitBias(r.LogitBias);
        if (r.Logprobs is < 0 or > 20) throw new ApiException(400, $"logprobs must be in 0..20 (got {r.Logprobs})", "logprobs");
        var prompt = r.Prompt ?? throw new ApiException(400, "'prompt' is required", "prompt", "missing_required_parameter");
        int[] tokens = prompt.Tokens ?? (prompt.Text is { Length: > 0 } text
            ? engine.Tokenizer.Encode(text, addBos: engine.Tokenizer.AddBos, parseSpecial: true)
            : throw new ApiException(400, "'prompt' is empty", "prompt"));
        var request = new CompletionRequest
        {
            PromptTokens = tokens,
            MaxTokens = MaxTokens(r.MaxTokens, "max_tokens", legacyDefault: true),
            Sampler = Sampler(r),
            StopStrings = Stops(r.Stop),
            Logprobs = r.Logprobs != null,
            TopLogprobs = r.Logprobs ?? 0,
        };
        return new Generation(request, r.Stream == true, r.StreamOptions?.IncludeUsage == true);
    }

    /// <summary>Submits to the engine; its refusals become OpenAI errors naming this endpoint's field for the prompt.</summary>
    public RequestStream Submit(CompletionRequest request, string promptParam, CancellationToken cancel)
    {
        try
        {
            return engine.Submit(request, cancel);
        }
        catch (EngineRequestException e)
        {
            var error = ApiException.From(e);
            if (error.Param is "messages" or "prompt" && error.Param != promptParam)
                error = new ApiException(error.Status, error.Message, promptParam, error.Code, error.Type);
            throw error;
        }
    }

    public List<ChatTurn> Messages(List<ChatMessageDto?>? messages)
    {
        if (messages == null) throw new ApiException(400, "'messages' is required", "messages", "missing_required_parameter");
        if (messages.Count == 0) throw new ApiException(400, "'messages' must have at least one message", "messages", "invalid_value");
        if (messages.Count > options.MaxMessages)
            throw new ApiException(400, $"'messages' has {messages.Count} messages; this server takes at most {options.MaxMessages}", "messages");
        var turns = new List<ChatTurn>(messages.Count);
        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i] ?? throw new ApiException(400, $"messages[{i}] must be an object", "messages");
            if (m.Role == null || !Roles.Contains(m.Role))
                throw new ApiException(400, $"messages[{i}].role must be one of system, developer, user, assistant, tool (got {(m.Role == null ? "none" : $"'{m.Role}'")})", "messages");
            if (m.ToolCalls is { ValueKind: JsonValueKind.Array } calls && calls.GetArrayLength() > 0)
                throw Unsupported("messages", $"messages[{i}] has tool_calls: tools are not supported");
            if (m.Content == null && m.Role != "assistant")
                throw new ApiException(400, $"messages[{i}].content is required", "messages", "missing_required_parameter");
            turns.Add(new ChatTurn(m.Role == "developer" ? "system" : m.Role, m.Content ?? ""));
        }
        return turns;
    }

    private static void CheckN(int? n)
    {
        if (n is not (null or 1))
            throw new ApiException(400, $"n must be 1 (got {n}): Kvq answers with one choice per request; send several requests for several choices", "n");
    }

    private static void CheckLogitBias(JsonElement? bias)
    {
        if (bias is { ValueKind: JsonValueKind.Object } b && b.EnumerateObject().Any())
            throw Unsupported("logit_bias", "logit_bias is not supported");
    }

    private static ApiException Unsupported(string param, string message) => new(400, message, param, "unsupported_parameter");

    private int MaxTokens(int? asked, string param, bool legacyDefault = false)
    {
        if (asked == null) return legacyDefault ? Math.Min(16, options.MaxTokensLimit) : options.MaxTokensLimit;
        if (asked < 1) throw new ApiException(400, $"{param} must be at least 1 (got {asked})", param);
        if (asked > options.MaxTokensLimit)
            throw new ApiException(400, $"{param} is {asked}; this server allows at most {options.MaxTokensLimit}", param);
        return asked.Value;
    }

    private static SamplerOptions Sampler(GenerationRequestDto r)
    {
        var (temperature, topP, topK, minP, repetition, presence, frequency, seed) =
            (r.Temperature, r.TopP, r.TopK, r.MinP, r.RepetitionPenalty, r.PresencePenalty, r.FrequencyPenalty, r.Seed);
        if (temperature is < 0 or > 2 || temperature is { } tt && !float.IsFinite(tt))
            throw new ApiException(400, $"temperature must be in [0, 2] (got {temperature})", "temperature");
        var s = new SamplerOptions
        {
            Temperature = temperature ?? 1f,
            TopP = topP ?? 1f,
            TopK = topK ?? 0,
            MinP = minP ?? 0f,
            RepetitionPenalty = repetition ?? 1f,
            PresencePenalty = presence ?? 0f,
            FrequencyPenalty = frequency ?? 0f,
            Seed = seed is { } v ? unchecked((ulong)v) : (ulong)Random.Shared.NextInt64(),
        };
        try
        {
            InferenceEngine.ValidateSampler(s);
        }
        catch (EngineRequestException e)
        {
            throw ApiException.From(e);
        }
        return s;
    }

    private static List<string> Stops(List<string>? stop)
    {
        if (stop == null) return [];
        if (stop.Count > MaxStops) throw new ApiException(400, $"'stop' has {stop.Count} strings; at most {MaxStops}", "stop");
        if (stop.Any(string.IsNullOrEmpty)) throw new ApiException(400, "'stop' strings must not be empty", "stop");
        return stop;
    }
}
