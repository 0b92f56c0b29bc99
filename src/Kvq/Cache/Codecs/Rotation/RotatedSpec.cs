namespace Kvq.Cache.Codecs.Rotation;

/// <summary>
/// <c>FORMAT:rot</c>: any registered format behind a Walsh-Hadamard rotation of each vector (<see cref="RotatedCodec"/>,
/// no random signs: the rotation llama.cpp applies to its quantized caches). The rotation happens where the inner
/// format stores its vectors: after RoPE for the uniform formats (the cache rotates keys at append), before RoPE for
/// KVQuant keys (which need a profile calibrated on rotated keys: <c>kvq calibrate --rotate</c>).
/// </summary>
public sealed record RotatedSpec(string Name, KvCodecSpec Inner) : KvCodecSpec(Name)
{
    public const string Suffix = ":rot";

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
        var inner = Inner.ForLayers(context, layers);
        var all = new KvCodecSpec[layers];
        for (int l = 0; l < layers; l++) all[l] = ReferenceEquals(inner[l], Inner) ? this : new RotatedSpec(Name, inner[l]);
        return all;
    }

    /// <summary>Null when the name does not end in ":rot"; throws on a malformed inner name.</summary>
    public static RotatedSpec? TryParse(string name)
    {
        if (!name.EndsWith(Suffix, StringComparison.Ordinal)) return null;
        var innerName = name[..^Suffix.Length];
        if (innerName.Length == 0) throw new KvSpecException($"'{name}': the format to rotate is missing before ':rot' (e.g. q4_0:rot)");
        var inner = KvCodecRegistry.Parse(innerName);
        if (inner is RotatedSpec) throw new KvSpecException($"'{name}': rotating twice changes nothing (one ':rot')");
        if (inner is LowRank.LowRankSpec)
            throw new KvSpecException($"'{name}': low-rank bases are fitted to unrotated vectors; rotate the latent instead (lrRh+FORMAT)");
        return new RotatedSpec(name, inner);
    }
}
