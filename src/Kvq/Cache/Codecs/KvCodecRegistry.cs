namespace Kvq.Cache.Codecs;

/// <summary>
/// The format table: one <see cref="KvFormat"/> row per format the CLI lists, found by exact name, and per family
/// (nuqB..., lrR+...) one parser found by the name's prefix. Adding a format = a class and a row here (families in
/// their own folder call <see cref="Register"/>).
/// </summary>
public static class KvCodecRegistry
{
    private static readonly List<KvFormat> Rows = [];
    private static readonly Dictionary<string, KvFormat> ByName = new(StringComparer.Ordinal);
    private static readonly Dictionary<string, KvFormat> ByFamilyPrefix = new(StringComparer.Ordinal);
    private static readonly List<(string Suffix, Func<string, KvCodecSpec?> Parse)> BySuffix = [];

    static KvCodecRegistry()
    {
        Add(KvFormat.Fixed("f32", "32-bit float (reference)", c => new F32Codec(c.BlockTokens, c.HeadDim)));
        Add(KvFormat.Fixed("f16", "16-bit float (llama.cpp's default cache)", c => new F16Codec(c.BlockTokens, c.HeadDim)));
        Add(KvFormat.Fixed("bf16", "bfloat16", c => new Bf16Codec(c.BlockTokens, c.HeadDim)));
        Add(KvFormat.Fixed("q8_0", "llama.cpp q8_0: groups of 32 along the head dim, f16 scale + int8 codes (8.5 bits)",
            c => new Q8_0Codec(c.BlockTokens, c.HeadDim)));
        Add(KvFormat.Fixed("q4_0", "llama.cpp q4_0: groups of 32 along the head dim, f16 scale + 4-bit codes (4.5 bits)",
            c => new Q4_0Codec(c.BlockTokens, c.HeadDim)));
        foreach (int bits in new[] { 8, 4, 2 }) AddUniform(bits);
        foreach (int bits in new[] { 4, 2 })
            Add(KvFormat.Fixed($"kivi{bits}",
                $"KIVI {bits}-bit: keys per channel over 32-token blocks, values per token in groups of 32, last 128 tokens f16 (block size 32)",
                c => new KiviCodec(bits, c.Side, c.BlockTokens, c.HeadDim)));
    }

    /// <summary>
    /// intB (per token, groups of 32 along the head dim, or the head dim if smaller), intB-g64 (groups of 64),
    /// intB-tok (one group per token) and intB-ch (per channel over each block's tokens): asymmetric, f16 scale + zero.
    /// </summary>
    private static void AddUniform(int bits)
    {
        string b = $"int{bits}";
        Add(KvFormat.Fixed(b, $"{bits}-bit uniform, per token in groups of 32 along the head dim (f16 scale + zero per group)",
            c => new UniformTokenCodec(b, bits, Math.Min(32, c.HeadDim), c.BlockTokens, c.HeadDim)));
        Add(KvFormat.Fixed($"{b}-g64", $"{bits}-bit uniform, per token in groups of 64 along the head dim",
            c => new UniformTokenCodec($"{b}-g64", bits, Math.Min(64, c.HeadDim), c.BlockTokens, c.HeadDim)));
        Add(KvFormat.Fixed($"{b}-tok", $"{bits}-bit uniform, per token (one f16 scale + zero per token and head)",
            c => new UniformTokenCodec($"{b}-tok", bits, c.HeadDim, c.BlockTokens, c.HeadDim)));
        Add(KvFormat.Fixed($"{b}-ch", $"{bits}-bit uniform, per channel over each block's tokens (f16 scale + zero per channel and block)",
            c => new UniformChannelCodec($"{b}-ch", bits, c.BlockTokens, c.HeadDim)));
    }

    private static void Add(KvFormat row)
    {
        if (!ByName.TryAdd(row.Name, row)) throw new InvalidOperationException($"KV format '{row.Name}' is registered twice");
        Rows.Add(row);
    }

    /// <summary>The table, in listing order.</summary>
    public static IReadOnlyList<KvFormat> Table
    {
        get { lock (Rows) return [.. Rows]; }
    }

    public static IEnumerable<(string Name, string Description)> Formats
    {
        get { foreach (var row in Table) yield return (row.Name, row.Description); }
    }

    /// <summary>Adds a row (codec families that live in their own folder). With <paramref name="familyPrefix"/>, names
    /// that start with it and are not rows themselves go to this row's parser (the first row of the family).</summary>
    public static void Register(KvFormat row, string? familyPrefix = null)
    {
        lock (Rows)
        {
            Add(row);
            if (familyPrefix != null) ByFamilyPrefix.TryAdd(familyPrefix, row);
        }
    }

    /// <summary>Adds a modifier that wraps any format: names ending in <paramref name="suffix"/> (and not rows themselves)
    /// go to <paramref name="parse"/>, which parses the rest of the name itself (e.g. <c>q4_0:rot</c>).</summary>
    public static void RegisterSuffix(string suffix, Func<string, KvCodecSpec?> parse)
    {
        lock (Rows) BySuffix.Add((suffix, parse));
    }

    /// <summary>A modifier with an argument as the name's last part: <c>SUFFIX@ARG</c>, ARG without ':' (e.g.
    /// <c>nuq3-1%:rot@4</c>).</summary>
    private static bool HasArgument(string name, string suffix)
    {
        int at = name.LastIndexOf(suffix + "@", StringComparison.Ordinal);
        return at >= 0 && name.IndexOf(':', at + suffix.Length) < 0;
    }

    /// <summary>The typed spec of a format name (as <c>--kv</c> takes it, one side).</summary>
    /// <exception cref="KvSpecException">Unknown or malformed name.</exception>
    public static KvCodecSpec Parse(string name)
    {
        KvFormat? row;
        Func<string, KvCodecSpec?>? modifier = null;
        lock (Rows)
        {
            if (!ByName.TryGetValue(name, out row))
                foreach (var (suffix, parse) in BySuffix)
                    if (name.EndsWith(suffix, StringComparison.Ordinal) || HasArgument(name, suffix)) { modifier = parse; break; }
            if (row == null && modifier == null)
                foreach (var (prefix, family) in ByFamilyPrefix)
                    if (name.StartsWith(prefix, StringComparison.Ordinal)) { row = family; break; }
        }
        if (modifier != null) return modifier(name) ?? throw new KvSpecException($"unknown KV format '{name}'");
        return row?.Parse(name)
               ?? throw new KvSpecException($"unknown KV format '{name}' (known: {string.Join(", ", Table.Select(e => e.Name))})");
    }

    /// <summary>A codec for a context-free use (tests, spec validation): layer 0, head 0, no profile.</summary>
    public static KvCodec Create(string name, KvSide side, int blockTokens, int headDim) =>
        Create(name, new KvCodecContext(side, blockTokens, headDim, 0, 0));

    public static KvCodec Create(string name, KvCodecContext context) => Parse(name).Create(context);
}
