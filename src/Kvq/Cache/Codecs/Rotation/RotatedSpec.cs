namespace Kvq.Cache.Codecs.Rotation;

/// <summary>
/// <c>FORMAT:rot</c>: any registered format behind a Walsh-Hadamard rotation of each vector (<see cref="RotatedCodec"/>,
/// no random signs: the rotation llama.cpp applies to its quantized caches). The rotation happens where the inner
/// format stores its vectors: after RoPE for the uniform formats (the cache rotates keys at append), before RoPE for
/// KVQuant keys (which need a profile calibrated on rotated keys: <c>kvq calibrate --rotate</c>).
/// <para><c>FORMAT:rot@L.L..</c> rotates only the listed layers (0-based, '.'-separated: <c>nuq3-1%:mixed:rot@4</c>);
/// the others store FORMAT unrotated. For KVQuant the profile must then hold rotated fits for the listed layers and
/// plain ones for the rest (a per-layer rotation choice: rotate where the rotated codebooks' calibration error is
/// lower).</para>
/// </summary>
public sealed record RotatedSpec(string Name, KvCodecSpec Inner) : KvCodecSpec(Name)
{
    public const string Suffix = ":rot";

    /// <summary>The layers rotated (<c>:rot@L.L</c>), ascending; null = every layer.</summary>
    public IReadOnlyList<int>? OnlyLayers { get; init; }

    /// <summary>Whether <paramref name="layer"/> is stored rotated.</summary>
    public bool Rotates(int layer) => OnlyLayers == null || OnlyLayers.Contains(layer);

    /// <summary>Appended to a KVQuant profile's text name by <c>kvq calibrate --rotate</c>: the profile's channels are
    /// the rotated ones (the profile file has no field of its own for it).</summary>
    public const string ProfileTextMarker = " [Hadamard-rotated]";

    /// <summary>Markers of a profile whose keys only (<c>--rotate-side keys</c>) or values only were fitted rotated.</summary>
    public const string ProfileKeysMarker = " [Hadamard-rotated keys]", ProfileValuesMarker = " [Hadamard-rotated values]";

    /// <summary>The marker for a profile fitted rotated on the given sides ("" for neither).</summary>
    public static string ProfileMarker(bool keys, bool values) =>
        keys && values ? ProfileTextMarker : keys ? ProfileKeysMarker : values ? ProfileValuesMarker : "";

    /// <summary>Whether a profile with this text name was fitted rotated on <paramref name="side"/>.</summary>
    public static bool ProfileRotates(string profileText, KvSide side) =>
        profileText.EndsWith(ProfileTextMarker, StringComparison.Ordinal) ||
        profileText.EndsWith(side == KvSide.Key ? ProfileKeysMarker : ProfileValuesMarker, StringComparison.Ordinal);

    public override KvCodec Create(KvCodecContext context) => RotationCodecs.Create(this, context);

    /// <summary>Per-layer inner specs (KVQuant's <c>:mixed</c> widths), each behind the rotation.</summary>
    public override KvCodecSpec[] ForLayers(KvCodecContext context, int layers)
    {
        if (OnlyLayers is { Count: > 0 } only && only[^1] >= layers)
            throw new KvSpecException($"'{Name}': layer {only[^1]} is past the model's {layers} layers (0..{layers - 1})");
        var inner = Inner.ForLayers(context, layers);
        var all = new KvCodecSpec[layers];
        for (int l = 0; l < layers; l++)
            all[l] = !Rotates(l) ? inner[l] : ReferenceEquals(inner[l], Inner) ? this : new RotatedSpec(Name, inner[l]) { OnlyLayers = OnlyLayers };
        return all;
    }

    /// <summary>Null when the name does not end in ":rot"; throws on a malformed inner name.</summary>
    public static RotatedSpec? TryParse(string name)
    {
        int at = name.LastIndexOf(Suffix, StringComparison.Ordinal);
        if (at < 0) return null;
        var tail = name[(at + Suffix.Length)..];
        if (tail.Length > 0 && (tail[0] != '@' || tail.Contains(':'))) return null;
        IReadOnlyList<int>? only = tail.Length == 0 ? null : ParseLayers(name, tail[1..]);
        var innerName = name[..at];
        if (innerName.Length == 0) throw new KvSpecException($"'{name}': the format to rotate is missing before ':rot' (e.g. q4_0:rot)");
        var inner = KvCodecRegistry.Parse(innerName);
        if (inner is RotatedSpec) throw new KvSpecException($"'{name}': rotating twice changes nothing (one ':rot')");
        if (inner is LowRank.LowRankSpec)
            throw new KvSpecException($"'{name}': low-rank bases are fitted to unrotated vectors; rotate the latent instead (lrRh+FORMAT)");
        return new RotatedSpec(name, inner) { OnlyLayers = only };
    }

    private static int[] ParseLayers(string name, string list)
    {
        var layers = new SortedSet<int>();
        foreach (var part in list.Split('.'))
        {
            if (!int.TryParse(part, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int l) || l > 4096)
                throw new KvSpecException($"'{name}': expected ':rot@' and layer numbers separated by '.', e.g. ':rot@4' or ':rot@2.4' (got '{part}')");
            if (!layers.Add(l)) throw new KvSpecException($"'{name}': layer {l} named twice after ':rot@'");
        }
        return [.. layers];
    }
}
