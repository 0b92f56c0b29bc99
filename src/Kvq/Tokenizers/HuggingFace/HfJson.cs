using System.Text.Json;
using Kvq.Formats;
using Kvq.Formats.Safetensors;

namespace Kvq.Tokenizers.HuggingFace;

/// <summary>
/// A JSON file of a Hugging Face model folder (tokenizer.json, tokenizer_config.json) whose errors name the file, the
/// JSON path of the offending value ("model.merges[17]", "pre_tokenizer.pretokenizers[0].pattern.Regex") and the
/// byte offset of the nearest key that <see cref="JsonSource"/> locates (keys of the top two levels).
/// </summary>
internal sealed class HfJsonFile : IDisposable
{
    private readonly JsonSource _source;

    private HfJsonFile(JsonSource source) => _source = source;

    /// <exception cref="ModelFormatException">the file is missing, not JSON, not an object, repeats a top-level key,
    /// or escapes an unpaired UTF-16 surrogate in a string.</exception>
    public static HfJsonFile Read(string path)
    {
        string item = Path.GetFileName(path);
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ModelFormatException(path, item, 0, "expected this file, found none", e);
        }
        CheckUtf8(path, item, bytes);
        CheckStringEscapes(path, bytes);
        return new(JsonSource.Parse(path, item, bytes, 0));
    }

    /// <summary>System.Text.Json leaves invalid UTF-8 inside strings to whoever reads them (InvalidOperationException).</summary>
    private static void CheckUtf8(string path, string item, byte[] bytes)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes)) return;
        int at = 0;
        while (at < bytes.Length && System.Text.Rune.DecodeFromUtf8(bytes.AsSpan(at), out _, out int n) == System.Buffers.OperationStatus.Done)
            at += n;
        throw new ModelFormatException(path, item, at, "expected UTF-8 text, found an invalid byte sequence");
    }

    /// <summary>
    /// JSON may escape half of a surrogate pair ("\ud800"), which no .NET string reader accepts: System.Text.Json
    /// throws InvalidOperationException when such a string is read. Find them up front (only escaped strings need
    /// decoding) so that they are a typed error with their offset; syntax errors are left to JsonSource.
    /// </summary>
    private static void CheckStringEscapes(string path, byte[] bytes)
    {
        int skip = bytes.AsSpan().StartsWith(System.Text.Encoding.UTF8.Preamble) ? 3 : 0;
        var reader = new Utf8JsonReader(bytes.AsSpan(skip));
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType is not (JsonTokenType.String or JsonTokenType.PropertyName) || !reader.ValueIsEscaped) continue;
                try { reader.GetString(); }
                catch (InvalidOperationException e)
                {
                    throw new ModelFormatException(path, "JSON string", skip + reader.TokenStartIndex,
                        $"expected valid text, found an escaped unpaired UTF-16 surrogate ({e.Message})", e);
                }
            }
        }
        catch (JsonException) { } // reported by JsonSource.Parse with its position
    }

    public string FilePath => _source.Path;
    public HfNode Root => new(this, _source.Root, "");

    public ModelFormatException Error(string jsonPath, string message, Exception? inner = null) =>
        new(FilePath, $"JSON path '{(jsonPath.Length == 0 ? "$" : jsonPath)}'", OffsetOf(jsonPath), message, inner);

    /// <summary>Offset of "outer/inner" or "outer", the first two names of the path, where the file has them.</summary>
    private long OffsetOf(string jsonPath)
    {
        int end1 = jsonPath.IndexOfAny(['.', '[']);
        string first = end1 < 0 ? jsonPath : jsonPath[..end1];
        if (first.Length == 0) return _source.BaseOffset;
        if (end1 >= 0 && jsonPath[end1] == '.')
        {
            int end2 = jsonPath.IndexOfAny(['.', '['], end1 + 1);
            string second = end2 < 0 ? jsonPath[(end1 + 1)..] : jsonPath[(end1 + 1)..end2];
            long inner = _source.OffsetOf(first + "/" + second);
            if (inner != _source.BaseOffset) return inner; // JsonSource answers the document start for keys it lacks
        }
        return _source.OffsetOf(first);
    }

    public void Dispose() => _source.Dispose();
}

/// <summary>A value in an <see cref="HfJsonFile"/> with its JSON path, and typed accessors that fail with a
/// <see cref="ModelFormatException"/> saying what was expected and what was found.</summary>
internal sealed class HfNode(HfJsonFile file, JsonElement value, string path)
{
    public JsonElement Value => value;
    public string Path => path;
    public JsonValueKind Kind => value.ValueKind;
    /// <summary>Absent or JSON null: both mean "not given" in the HF files.</summary>
    public bool IsMissing => Kind is JsonValueKind.Undefined or JsonValueKind.Null;

    /// <summary>The "type" string of an object (the tag HF tokenizers serialise every component with), else null.</summary>
    public string? TypeName =>
        Kind == JsonValueKind.Object && value.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;

    public ModelFormatException Error(string message, Exception? inner = null) => file.Error(path, message, inner);
    public ModelFormatException Expected(string what) => Error($"expected {what}, found {Describe()}");
    public string Describe() => Kind == JsonValueKind.Undefined ? "none" : JsonSource.Describe(value);

    public HfNode Property(string key)
    {
        if (Kind != JsonValueKind.Object) throw Expected("an object");
        value.TryGetProperty(key, out var v);
        return new HfNode(file, v, path.Length == 0 ? key : path + "." + key);
    }

    /// <summary>The property, or null when it is absent or null.</summary>
    public HfNode? Optional(string key) => Property(key) is { IsMissing: false } n ? n : null;

    public HfNode Required(string key, string what)
    {
        var n = Property(key);
        return n.IsMissing ? throw n.Expected(what) : n;
    }

    public string String() => Kind == JsonValueKind.String ? value.GetString()! : throw Expected("a string");

    public bool Bool() => Kind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw Expected("true or false"),
    };

    public int Int() => Kind == JsonValueKind.Number && value.TryGetInt32(out int i) ? i : throw Expected("an integer");

    public List<HfNode> Items()
    {
        if (Kind != JsonValueKind.Array) throw Expected("an array");
        var items = new List<HfNode>(value.GetArrayLength());
        int i = 0;
        foreach (var e in value.EnumerateArray()) items.Add(new HfNode(file, e, $"{path}[{i++}]"));
        return items;
    }

    /// <summary>Element <paramref name="index"/> of this array (for loops over large arrays that only need a node on error).</summary>
    public HfNode Item(int index, JsonElement v) => new(file, v, $"{path}[{index}]");

    /// <summary>Child of an object by name, for maps such as model.vocab (path "model.vocab['piece']").</summary>
    public HfNode Entry(string name, JsonElement v) => new(file, v, $"{path}['{Show(name)}']");

    /// <summary>A piece or pattern for a message: control characters escaped, long text cut.</summary>
    public static string Show(string s)
    {
        var sb = new System.Text.StringBuilder();
        foreach (char c in s.Length <= 60 ? s : s[..60])
            sb.Append(char.IsControl(c) ? $"\\u{(int)c:X4}" : c.ToString());
        if (s.Length > 60) sb.Append("...");
        return sb.ToString();
    }
}
