namespace Kvq.Cache.Codecs;

/// <summary>Codec names the CLI accepts, and the factory behind each. Adding a format = a class and a row here.</summary>
public static class KvCodecRegistry
{
    private sealed record Entry(string Name, string Description, Func<string, KvCodecContext, KvCodec?> Create);

    private static readonly List<Entry> Entries =
    [
        new("f32", "32-bit float (reference)", (n, c) => n == "f32" ? new F32Codec(c.BlockTokens, c.HeadDim) : null),
        new("f16", "16-bit float (llama.cpp's default cache)", (n, c) => n == "f16" ? new F16Codec(c.BlockTokens, c.HeadDim) : null),
        new("bf16", "bfloat16", (n, c) => n == "bf16" ? new Bf16Codec(c.BlockTokens, c.HeadDim) : null),
    ];

    public static IEnumerable<(string Name, string Description)> Formats
    {
        get { foreach (var e in Entries) yield return (e.Name, e.Description); }
    }

    /// <summary>Registers a format (used by codec families that live in their own folder).</summary>
    public static void Register(string name, string description, Func<string, KvCodecContext, KvCodec?> create)
    {
        lock (Entries) Entries.Add(new Entry(name, description, create));
    }

    /// <summary>A codec for a context-free use (tests, spec validation): layer 0, head 0, no profile.</summary>
    public static KvCodec Create(string name, KvSide side, int blockTokens, int headDim) =>
        Create(name, new KvCodecContext(side, blockTokens, headDim, 0, 0));

    public static KvCodec Create(string name, KvCodecContext context)
    {
        foreach (var e in Entries)
        {
            var c = e.Create(name, context);
            if (c != null) return c;
        }
        throw new KvSpecException($"unknown KV format '{name}' (known: {string.Join(", ", Entries.ConvertAll(e => e.Name))})");
    }
}
