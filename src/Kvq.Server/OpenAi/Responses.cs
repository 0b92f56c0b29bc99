using System.Text.Json.Serialization;

namespace Kvq.Server.OpenAi;

// OpenAI's response bodies and stream chunks.

internal sealed record ErrorBody(ErrorDetail Error);

internal sealed record ErrorDetail(
    string Message,
    string Type,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Param,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? Code);

internal sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens, PromptTokensDetails PromptTokensDetails);

internal sealed record PromptTokensDetails(int CachedTokens);

internal sealed record ChatCompletion(
    string Id, string Object, long Created, string Model, List<ChatChoice> Choices, Usage Usage);

internal sealed record ChatChoice(
    int Index, AssistantMessage Message,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] ChatLogprobs? Logprobs,
    string FinishReason);

internal sealed record AssistantMessage(string Role, string Content);

internal sealed record ChatLogprobs(List<ChatTokenLogprob> Content);

internal sealed record ChatTokenLogprob(string Token, float Logprob, int[]? Bytes, List<ChatTopLogprob> TopLogprobs);

internal sealed record ChatTopLogprob(string Token, float Logprob, int[]? Bytes);

internal sealed record ChatCompletionChunk(
    string Id, string Object, long Created, string Model, List<ChatChunkChoice> Choices, Usage? Usage = null);

internal sealed record ChatChunkChoice(
    int Index, ChatDelta Delta,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] ChatLogprobs? Logprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason);

internal sealed record ChatDelta(string? Role, string? Content);

internal sealed record TextCompletion(
    string Id, string Object, long Created, string Model, List<TextChoice> Choices, Usage? Usage = null);

internal sealed record TextChoice(
    int Index, string Text,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] TextLogprobs? Logprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason);

internal sealed record TextLogprobs(List<string> Tokens, List<float> TokenLogprobs, List<Dictionary<string, float>>? TopLogprobs, List<int> TextOffset);

internal sealed record ModelList(string Object, List<ModelCard> Data);

internal sealed record ModelCard(string Id, string Object, long Created, string OwnedBy, int MaxModelLen);

internal sealed record HealthBody(string Status);

internal sealed record TokenizeResponse(int[] Tokens, int Count, int MaxModelLen);

internal sealed record DetokenizeResponse(string Prompt);
