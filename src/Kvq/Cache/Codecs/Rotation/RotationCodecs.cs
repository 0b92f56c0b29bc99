using System.Runtime.CompilerServices;

namespace Kvq.Cache.Codecs.Rotation;

/// <summary>
/// The <c>:rot</c> modifier in the codec registry: listed rows for the uniform formats (q4_0:rot, q8_0:rot, int4:rot),
/// and any other <c>FORMAT:rot</c> parsed by suffix.
/// </summary>
public static class RotationCodecs
{
    private static int _registered;

#pragma warning disable CA2255 // The registry has no other hook for codec families that live in their own folder.
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void RegisterOnLoad() => Register();

    public static void Register()
    {
        if (Interlocked.Exchange(ref _registered, 1) != 0) return;
        foreach (var (inner, what) in new[] { ("q8_0", "llama.cpp q8_0"), ("q4_0", "llama.cpp q4_0"), ("int4", "int4 (groups of 32)") })
            KvCodecRegistry.Register(new KvFormat(inner + RotatedSpec.Suffix,
                $"{what} after a Walsh-Hadamard rotation of each vector over the head dim (llama.cpp's default for quantized caches); any FORMAT:rot",
                RotatedSpec.TryParse));
        KvCodecRegistry.RegisterSuffix(RotatedSpec.Suffix, RotatedSpec.TryParse);
    }

    /// <summary>The layer's codec: rotated, or the inner format alone for a layer that <c>:rot@</c> leaves out.</summary>
    public static KvCodec Create(RotatedSpec spec, KvCodecContext ctx)
    {
        if (spec.Inner is KvQuant.KvQuantSpec && ctx.Profile is KvQuant.KvQuantProfile auto && auto.Calibrations.Any(c => c.RotatesAny))
            throw new KvSpecException($"'{spec.Name}': the profile chooses the rotation per layer itself (kvq calibrate --rotate auto); " +
                                      $"give the format without ':rot' ('{spec.Inner.Name}')");
        if (!spec.Rotates(ctx.Layer)) return spec.Inner.Create(ctx);
        // KVQuant's per-channel scales and codebooks must be fitted to the channels it stores: the rotated ones.
        if (spec.Inner is KvQuant.KvQuantSpec && ctx.Profile is KvQuant.KvQuantProfile p
            && !RotatedSpec.ProfileRotates(p.Settings.Text, ctx.Side))
            throw new KvSpecException($"'{spec.Name}': the profile ({p.Settings.Text}) was calibrated on unrotated {(ctx.Side == KvSide.Key ? "keys" : "values")}; " +
                                      "KVQuant behind a rotation needs one fitted to the rotated channels: kvq calibrate --rotate");
        KvCodec inner;
        try { inner = spec.Inner.Create(ctx); }
        catch (KvSpecException e) { throw new KvSpecException($"'{spec.Name}': {e.Message}"); }
        return new RotatedCodec(spec.Name, inner);
    }
}
