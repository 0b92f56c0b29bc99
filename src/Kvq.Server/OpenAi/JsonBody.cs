using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Text.Unicode;
using Microsoft.AspNetCore.Http;

namespace Kvq.Server.OpenAi;

/// <summary>Reads a request body as JSON: bounded in size, checked to be UTF-8, and every way it can be wrong (syntax,
/// a wrong type at some field, not an object) answered as a 400 that names the field.</summary>
internal static class JsonBody
{
    public static async Task<T> ReadAsync<T>(HttpContext ctx, JsonTypeInfo<T> type, long limit) where T : class
    {
        var bytes = await ReadBytesAsync(ctx, limit);
        if (!Utf8.IsValid(bytes))
            throw new ApiException(400, "the request body is not valid UTF-8", null, "invalid_encoding");
        try
        {
            return JsonSerializer.Deserialize(bytes, type) ?? throw new ApiException(400, "the request body must be a JSON object", null, "invalid_json");
        }
        catch (JsonException e)
        {
            throw Explain(bytes, type, e);
        }
    }

    private static ApiException Explain(byte[] bytes, JsonTypeInfo type, JsonException e)
    {
        try
        {
            using var doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 32 });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                return new ApiException(400, "the request body must be a JSON object", null, "invalid_json");
        }
        catch (JsonException syntax)
        {
            return new ApiException(400, $"the request body is not valid JSON: {FirstSentence(syntax.Message)}", null, "invalid_json");
        }
        // Valid JSON, so a value had the wrong type, or a whole number did not fit its integer field; e.Path is like
        // "$.messages[0].role".
        string? param = e.Path is { Length: > 2 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : null;
        string field = param ?? "a field";
        if (param != null && IntegerRange(type, param) is { } range && WholeNumberAt(bytes, param) is { } number)
            return OutOfRange(field, number, range, TopLevel(param));
        return new ApiException(400, $"'{field}' has a value of the wrong type", TopLevel(param), "invalid_type");
    }

    /// <summary>A whole number too large (or small) for its field: the right type, a value out of range, so
    /// "invalid_value" as for the server's own range checks (max_tokens above the limit), naming the field and the
    /// range.</summary>
    public static ApiException OutOfRange(string field, string number, (long Min, long Max) range, string? param) =>
        new(400, $"'{field}' is {number}, out of range: outside the {(range.Max == int.MaxValue ? 32 : 64)}-bit integer " +
                 $"range {range.Min} to {range.Max}", param, "invalid_value");

    /// <summary>The literal at <paramref name="param"/> ("a.b[2].c") when it is written as a whole number (digits and an
    /// optional minus: 1.5 and 1e3 stay wrong types), else null.</summary>
    private static string? WholeNumberAt(byte[] bytes, string param)
    {
        using var doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 32 });
        var at = doc.RootElement;
        foreach (var (name, index) in Segments(param))
        {
            if (name != null && at.ValueKind == JsonValueKind.Object && at.TryGetProperty(name, out var child)) at = child;
            else if (name == null && at.ValueKind == JsonValueKind.Array && index < at.GetArrayLength()) at = at[index];
            else return null;
        }
        return at.ValueKind == JsonValueKind.Number && IsWholeNumber(at.GetRawText()) ? at.GetRawText() : null;
    }

    /// <summary>A JSON number literal written as an integer: digits after an optional minus.</summary>
    public static bool IsWholeNumber(string raw)
    {
        int digits = raw.StartsWith('-') ? 1 : 0;
        return raw.Length > digits && raw.AsSpan(digits).IndexOfAnyExceptInRange('0', '9') < 0;
    }

    /// <summary>The range of the integer type the path leads to, read from the body's type info; null where the path
    /// does not lead to an int or a long (a number where a string belongs is a wrong type, whatever its size).</summary>
    private static (long Min, long Max)? IntegerRange(JsonTypeInfo type, string param)
    {
        Type? at = type.Type;
        foreach (var (name, _) in Segments(param))
        {
            var info = type.Options.TryGetTypeInfo(at!, out var t) ? t : null;
            if (info == null) return null;
            at = name == null ? info.ElementType : info.Properties.FirstOrDefault(p => p.Name == name)?.PropertyType;
            if (at == null) return null;
        }
        return (Nullable.GetUnderlyingType(at!) ?? at) switch
        {
            var u when u == typeof(int) => (int.MinValue, int.MaxValue),
            var u when u == typeof(long) => (long.MinValue, long.MaxValue),
            _ => null,
        };
    }

    /// <summary>"a.b[2].c" -> (a), (b), [2], (c).</summary>
    private static IEnumerable<(string? Name, int Index)> Segments(string param)
    {
        int i = 0;
        while (i < param.Length)
        {
            if (param[i] == '.') { i++; continue; }
            if (param[i] == '[')
            {
                int close = param.IndexOf(']', i);
                if (close < 0 || !int.TryParse(param.AsSpan(i + 1, close - i - 1), out int index)) yield break;
                yield return (null, index);
                i = close + 1;
                continue;
            }
            int end = param.IndexOfAny(['.', '['], i);
            if (end < 0) end = param.Length;
            yield return (param[i..end], 0);
            i = end;
        }
    }

    /// <summary>"messages[0].role" -> "messages": OpenAI names the top-level parameter.</summary>
    private static string? TopLevel(string? param)
    {
        if (param == null) return null;
        int end = param.IndexOfAny(['.', '[']);
        return end < 0 ? param : param[..end];
    }

    private static string FirstSentence(string message)
    {
        int at = message.IndexOf(" Path:", StringComparison.Ordinal);
        return at > 0 ? message[..at] : message;
    }

    private static async Task<byte[]> ReadBytesAsync(HttpContext ctx, long limit)
    {
        if (ctx.Request.ContentLength > limit) throw TooLarge(limit);
        var buffer = new ArrayBufferWriter<byte>(4096);
        var body = ctx.Request.Body;
        try
        {
            while (true)
            {
                var span = buffer.GetMemory(16384);
                int n = await body.ReadAsync(span, ctx.RequestAborted);
                if (n == 0) break;
                buffer.Advance(n);
                if (buffer.WrittenCount > limit) throw TooLarge(limit);
            }
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw TooLarge(limit);
        }
        if (buffer.WrittenCount == 0) throw new ApiException(400, "the request body is empty: expected a JSON object", null, "invalid_json");
        return buffer.WrittenSpan.ToArray();
    }

    private static ApiException TooLarge(long limit) =>
        new(413, $"the request body is larger than the server's limit of {limit} bytes", null, "request_too_large");
}
