namespace Kvq.Cache.Codecs;

/// <summary>Codec names the CLI accepts, and the factory behind each. Adding a format = a class and a row here.</summary>
public static class KvCodecRegistry
{
    private sealed record Entry(string Name, string Description, Func<string, KvSide, int, int, KvCodec?> Create);

    private static readonly List<Entry> Entries =
    [
        new("f32", "32-bit float (reference)", (n, s, b, d) => n == "f32" ? new F32Codec(b, d) : null),
        new("f16", "16-bit float (llama.cpp's default cache)", (n, s, b, d) => n == "f16" ? new F16Codec(b, d) : null),
        new("bf16", "bfloat16", (n, s, b, d) => n == "bf16" ? new Bf16Codec(b, d) : null),
    ];

    public static IEnumerable<(string Name, string Description)> Formats
    {
        get { foreach (var e in Entries) yield return (e.Name, e.Description); }
    }

    /// <summary>Registers a format (used by codec families that live in their own folder).</summary>
    public static void Register(string name, string description, Func<string, KvSide, int, int, KvCodec?> create) =>
        Entries.Add(new Entry(name, description, create));

    public static KvCodec Create(string name, KvSide side, int blockTokens, int headDim)
    {
        foreach (var e in Entries)
        {
            var c = e.Create(name, side, blockTokens, headDim);
            if (c != null) return c;
        }
        throw new KvSpecException($"unknown KV format '{name}' (known: {string.Join(", ", Entries.ConvertAll(e => e.Name))})");
    }
}
