using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Kvq.Server.OpenAi;

/// <summary>"stop": a string or a list of strings.</summary>
internal sealed class StopConverter : JsonConverter<List<string>>
{
    public override List<string>? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.String) return [reader.GetString()!];
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new ApiException(400, "'stop' must be a string or a list of strings", "stop");
        var list = new List<string>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.String) throw new ApiException(400, "'stop' must be a string or a list of strings", "stop");
            list.Add(reader.GetString()!);
        }
        return list;
    }

    public override void Write(Utf8JsonWriter writer, List<string> value, JsonSerializerOptions options) => throw new NotSupportedException();
}

/// <summary>A message's "content": a string, or a list of content parts of which only text parts are accepted.</summary>
internal sealed class ContentConverter : JsonConverter<string>
{
    public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.String) return reader.GetString();
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new ApiException(400, "a message's 'content' must be a string or a list of content parts", "messages");
        var text = new StringBuilder();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            using var part = JsonDocument.ParseValue(ref reader);
            var p = part.RootElement;
            if (p.ValueKind != JsonValueKind.Object || !p.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
                throw new ApiException(400, "a content part must be an object with a 'type'", "messages");
            if (type.GetString() != "text" || !p.TryGetProperty("text", out var t) || t.ValueKind != JsonValueKind.String)
                throw new ApiException(400, $"content parts of type '{type.GetString()}' are not supported: this model reads text only", "messages");
            text.Append(t.GetString());
        }
        return text.ToString();
    }

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(value);
}

/// <summary>A completion's "prompt": a string, a list of token ids, or a one-element list of either (batches of prompts
/// are refused).</summary>
internal sealed class PromptConverter : JsonConverter<PromptInput>
{
    public override PromptInput? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.String) return new PromptInput(reader.GetString(), null);
        if (reader.TokenType != JsonTokenType.StartArray) throw Wrong();
        using var doc = JsonDocument.ParseValue(ref reader);
        var items = doc.RootElement.EnumerateArray().ToList();
        if (items.Count > 0 && items.All(i => i.ValueKind == JsonValueKind.Number)) return new PromptInput(null, Ids(items, "prompt"));
        if (items.Count == 1 && items[0].ValueKind == JsonValueKind.String) return new PromptInput(items[0].GetString(), null);
        if (items.Count == 1 && items[0].ValueKind == JsonValueKind.Array) return new PromptInput(null, Ids(items[0].EnumerateArray().ToList(), "prompt[0]"));
        if (items.Count > 1 && items.All(i => i.ValueKind is JsonValueKind.String or JsonValueKind.Array))
            throw new ApiException(400, "a batch of prompts is not supported: send one prompt per request", "prompt");
        throw Wrong();
    }

    private static int[] Ids(List<JsonElement> items, string where)
    {
        var ids = new int[items.Count];
        for (int i = 0; i < ids.Length; i++)
        {
            if (items[i].ValueKind != JsonValueKind.Number) throw Wrong();
            if (items[i].TryGetInt32(out ids[i])) continue;
            // A whole number past int's range is a token id out of range, not a wrong type (1.5 and 1e3 are).
            if (JsonBody.IsWholeNumber(items[i].GetRawText()))
                throw JsonBody.OutOfRange($"{where}[{i}]", items[i].GetRawText(), (int.MinValue, int.MaxValue), "prompt");
            throw Wrong();
        }
        return ids;
    }

    private static ApiException Wrong() => new(400, "'prompt' must be a string or a list of token ids", "prompt");

    public override void Write(Utf8JsonWriter writer, PromptInput value, JsonSerializerOptions options) => throw new NotSupportedException();
}
