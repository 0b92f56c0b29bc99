using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kvq.Server.OpenAi;

// OpenAI's request bodies, as far as Kvq reads them. Unknown fields are ignored (clients send many); fields Kvq cannot
// honour are refused by RequestMapper rather than silently dropped.

/// <summary>The fields chat and text completions share: model, streaming, length, sampling, stops.</summary>
internal abstract class GenerationRequestDto
{
    public string? Model { get; set; }
    public bool? Stream { get; set; }
    public StreamOptions? StreamOptions { get; set; }
    public int? MaxTokens { get; set; }
    public float? Temperature { get; set; }
    public float? TopP { get; set; }
    public int? TopK { get; set; }
    public float? MinP { get; set; }
    public float? RepetitionPenalty { get; set; }
    public float? PresencePenalty { get; set; }
    public float? FrequencyPenalty { get; set; }
    public long? Seed { get; set; }
    [JsonConverter(typeof(StopConverter))]
    public List<string>? Stop { get; set; }
    public int? N { get; set; }
    public JsonElement? LogitBias { get; set; }
}

internal sealed class ChatCompletionRequest : GenerationRequestDto
{
    public List<ChatMessageDto?>? Messages { get; set; }
    public int? MaxCompletionTokens { get; set; }
    public bool? Logprobs { get; set; }
    public int? TopLogprobs { get; set; }
    public JsonElement? Tools { get; set; }
    public JsonElement? ToolChoice { get; set; }
    public JsonElement? ResponseFormat { get; set; }
}

internal sealed class ChatMessageDto
{
    public string? Role { get; set; }
    [JsonConverter(typeof(ContentConverter))]
    public string? Content { get; set; }
    public JsonElement? ToolCalls { get; set; }
}

internal sealed class StreamOptions
{
    public bool? IncludeUsage { get; set; }
}

internal sealed class CompletionRequestDto : GenerationRequestDto
{
    [JsonConverter(typeof(PromptConverter))]
    public PromptInput? Prompt { get; set; }
    /// <summary>The legacy API's logprobs: how many alternatives per token (0..5), null for none.</summary>
    public int? Logprobs { get; set; }
    public bool? Echo { get; set; }
    public int? BestOf { get; set; }
    public string? Suffix { get; set; }
}

/// <summary>A completion prompt: text, or token ids.</summary>
internal sealed record PromptInput(string? Text, int[]? Tokens);

internal sealed class TokenizeRequest
{
    public string? Model { get; set; }
    public string? Prompt { get; set; }
    public List<ChatMessageDto?>? Messages { get; set; }
    public bool? AddSpecialTokens { get; set; }
}

internal sealed class DetokenizeRequest
{
    public string? Model { get; set; }
    public int[]? Tokens { get; set; }
}
