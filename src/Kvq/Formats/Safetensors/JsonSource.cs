using System.Text;
using System.Text.Json;

namespace Kvq.Formats.Safetensors;

/// <summary>
/// A JSON document read from a model file, with the byte offsets of its keys (top level, and one level below as
/// "outer/inner") so errors can point into the file. Duplicate keys at those levels are rejected: JSON readers
/// disagree on which copy wins.
/// </summary>
internal sealed class JsonSource : IDisposable
{
    private readonly JsonDocument _doc;
    private readonly Dictionary<string, long> _offsets;

    public string Path { get; }
    public JsonElement Root => _doc.RootElement;
    /// <summary>File offset of the JSON text's first byte.</summary>
    public long BaseOffset { get; }

    private JsonSource(string path, JsonDocument doc, Dictionary<string, long> offsets, long baseOffset)
    {
        Path = path;
        _doc = doc;
        _offsets = offsets;
        BaseOffset = baseOffset;
    }

    /// <summary>Parses <paramref name="json"/> (UTF-8, optional BOM) that starts at <paramref name="baseOffset"/> in the file; its root must be an object.</summary>
    public static JsonSource Parse(string path, string item, byte[] json, long baseOffset)
    {
        int skip = json.AsSpan().StartsWith(Encoding.UTF8.Preamble) ? 3 : 0;
        var text = json.AsMemory(skip);
        JsonDocument doc;
        Dictionary<string, long> offsets;
        try
        {
            doc = JsonDocument.Parse(text);
            offsets = KeyOffsets(text.Span, out var duplicate, out long duplicateAt);
            if (duplicate != null)
            {
                doc.Dispose();
                throw new ModelFormatException(path, $"key '{duplicate}'", baseOffset + skip + duplicateAt, "expected each key once, found it twice");
            }
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, item, baseOffset + skip + ErrorOffset(text.Span, e),
                $"expected valid JSON, found a syntax error: {e.Message}", e);
        }
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            var kind = doc.RootElement.ValueKind;
            doc.Dispose();
            throw new ModelFormatException(path, item, baseOffset + skip, $"expected a JSON object, found {Describe(kind)}");
        }
        return new JsonSource(path, doc, offsets, baseOffset + skip);
    }

    public static JsonSource Read(string path, string item)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (FileNotFoundException e) { throw new ModelFormatException(path, item, 0, "expected this file, found none", e); }
        return Parse(path, item, bytes, 0);
    }

    /// <summary>File offset of a key ("name" at the top level, "outer/inner" one level down), or of the document when unknown.</summary>
    public long OffsetOf(string key) => BaseOffset + _offsets.GetValueOrDefault(key);

    public ModelFormatException Error(string key, string message) => new(Path, $"'{key}'", OffsetOf(key), message);

    public static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };

    public static string Describe(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object or JsonValueKind.Array => Describe(e.ValueKind),
        _ => $"{Describe(e.ValueKind)} ({Truncate(e.GetRawText())})",
    };

    private static string Truncate(string s) => s.Length <= 40 ? s : s[..40] + "...";

    private static Dictionary<string, long> KeyOffsets(ReadOnlySpan<byte> json, out string? duplicate, out long duplicateAt)
    {
        var offsets = new Dictionary<string, long>(StringComparer.Ordinal);
        var reader = new Utf8JsonReader(json);
        string? outer = null;
        duplicate = null;
        duplicateAt = 0;
        while (reader.Read())
        {
            if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth > 2) continue;
            string name = reader.GetString()!;
            string key;
            if (reader.CurrentDepth == 1) key = outer = name;
            else key = outer + "/" + name;
            if (!offsets.TryAdd(key, reader.TokenStartIndex) && duplicate == null)
            {
                duplicate = key;
                duplicateAt = reader.TokenStartIndex;
            }
        }
        return offsets;
    }

    /// <summary>JsonException reports (line, byte in line), both 0-based; turn them into a byte offset.</summary>
    private static long ErrorOffset(ReadOnlySpan<byte> json, JsonException e)
    {
        long line = e.LineNumber ?? 0, inLine = e.BytePositionInLine ?? 0;
        long at = 0;
        for (long l = 0; l < line && at < json.Length; at++)
            if (json[(int)at] == (byte)'\n') l++;
        return Math.Min(at + inLine, json.Length);
    }

    public void Dispose() => _doc.Dispose();
}
