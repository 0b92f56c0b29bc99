using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kvq.Server.OpenAi;

/// <summary>Source-generated (trim- and NativeAOT-safe) JSON for every body the server reads or writes; snake_case.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, NumberHandling = JsonNumberHandling.Strict,
    AllowTrailingCommas = false, ReadCommentHandling = JsonCommentHandling.Disallow, MaxDepth = 32)]
[JsonSerializable(typeof(ChatCompletionRequest))]
[JsonSerializable(typeof(CompletionRequestDto))]
[JsonSerializable(typeof(TokenizeRequest))]
[JsonSerializable(typeof(DetokenizeRequest))]
[JsonSerializable(typeof(ErrorBody))]
[JsonSerializable(typeof(ChatCompletion))]
[JsonSerializable(typeof(ChatCompletionChunk))]
[JsonSerializable(typeof(TextCompletion))]
[JsonSerializable(typeof(ModelList))]
[JsonSerializable(typeof(ModelCard))]
[JsonSerializable(typeof(HealthBody))]
[JsonSerializable(typeof(TokenizeResponse))]
[JsonSerializable(typeof(DetokenizeResponse))]
internal sealed partial class OpenAiJson : JsonSerializerContext;
