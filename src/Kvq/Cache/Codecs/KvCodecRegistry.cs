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
        new("q8_0", "llama.cpp q8_0: groups of 32 along the head dim, f16 scale + int8 codes (8.5 bits)",
            (n, c) => n == "q8_0" ? new Q8_0Codec(c.BlockTokens, c.HeadDim) : null),
        new("q4_0", "llama.cpp q4_0: groups of 32 along the head dim, f16 scale + 4-bit codes (4.5 bits)",
            (n, c) => n == "q4_0" ? new Q4_0Codec(c.BlockTokens, c.HeadDim) : null),
        .. UniformEntries(8),
        .. UniformEntries(4),
        .. UniformEntries(2),
        new("kivi4", "KIVI 4-bit: keys per channel over 32-token blocks, values per token in groups of 32, last 128 tokens f16 (block size 32)",
            (n, c) => n == "kivi4" ? new KiviCodec(4, c.Side, c.BlockTokens, c.HeadDim) : null),
        new("kivi2", "KIVI 2-bit: keys per channel over 32-token blocks, values per token in groups of 32, last 128 tokens f16 (block size 32)",
            (n, c) => n == "kivi2" ? new KiviCodec(2, c.Side, c.BlockTokens, c.HeadDim) : null),
    ];

    /// <summary>
    /// intB (per token, groups of 32 along the head dim, or the head dim if smaller), intB-g64 (groups of 64),
    /// intB-tok (one group per token) and intB-ch (per channel over each block's tokens): asymmetric, f16 scale + zero.
    /// </summary>
    private static IEnumerable<Entry> UniformEntries(int bits)
    {
        string b = $"int{bits}";
        yield return new(b, $"{bits}-bit uniform, per token in groups of 32 along the head dim (f16 scale + zero per group)",
            (n, c) => n == b ? new UniformTokenCodec(n, bits, Math.Min(32, c.HeadDim), c.BlockTokens, c.HeadDim) : null);
        yield return new($"{b}-g64", $"{bits}-bit uniform, per token in groups of 64 along the head dim",
            (n, c) => n == $"{b}-g64" ? new UniformTokenCodec(n, bits, Math.Min(64, c.HeadDim), c.BlockTokens, c.HeadDim) : null);
        yield return new($"{b}-tok", $"{bits}-bit uniform, per token (one f16 scale + zero per token and head)",
            (n, c) => n == $"{b}-tok" ? new UniformTokenCodec(n, bits, c.HeadDim, c.BlockTokens, c.HeadDim) : null);
        yield return new($"{b}-ch", $"{bits}-bit uniform, per channel over each block's tokens (f16 scale + zero per channel and block)",
            (n, c) => n == $"{b}-ch" ? new UniformChannelCodec(n, bits, c.BlockTokens, c.HeadDim) : null);
    }

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
