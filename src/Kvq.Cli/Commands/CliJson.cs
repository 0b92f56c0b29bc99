using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Kvq.Bench;
using Kvq.Eval;

namespace Kvq.Cli.Commands;

/// <summary>
/// Every type kvq prints or writes as JSON, serialized by generated code (no reflection, so the NativeAOT binary
/// writes the same lines): snake_case names, NaN and infinities as strings. A new row type is added here.
/// </summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(PerplexityResult))]
[JsonSerializable(typeof(KlResult))]
[JsonSerializable(typeof(CopyRecallResult))]
[JsonSerializable(typeof(RetrievalTrial))]
[JsonSerializable(typeof(RetrievalCell))]
[JsonSerializable(typeof(KvMemoryRow))]
[JsonSerializable(typeof(ThroughputResult))]
[JsonSerializable(typeof(Bench.Serving.ServeBenchResult))]
public sealed partial class CliJson : JsonSerializerContext
{
    /// <summary>One line of JSON for <paramref name="value"/>, whose type must be listed above.</summary>
    public static string Line<T>(T value) =>
        JsonSerializer.Serialize(value, Default.GetTypeInfo(typeof(T)) as JsonTypeInfo<T>
            ?? throw new InvalidOperationException($"{typeof(T).Name} is not in {nameof(CliJson)}'s [JsonSerializable] list"));
}

/// <summary>The report's run.json: names and values as they are, indented.</summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(Dictionary<string, string>))]
public sealed partial class RunInfoJson : JsonSerializerContext;
