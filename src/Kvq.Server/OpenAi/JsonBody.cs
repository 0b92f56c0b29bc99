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
            throw Explain(bytes, e);
        }
    }

    private static ApiException Explain(byte[] bytes, JsonException e)
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
        // Valid JSON, so a value had the wrong type; e.Path is like "$.messages[0].role".
        string? param = e.Path is { Length: > 2 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : null;
        string field = param ?? "a field";
        return new ApiException(400, $"'{field}' has a value of the wrong type", TopLevel(param), "invalid_type");
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
