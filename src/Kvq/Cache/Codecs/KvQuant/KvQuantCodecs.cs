using System.Runtime.CompilerServices;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// The nuq family in the codec registry: <c>nuq4</c>, <c>nuq3</c>, <c>nuq2</c>, each with an optional outlier
/// suffix (<c>nuq3-1%</c>) and ablation modifiers (<see cref="KvQuantSpec"/>). Keys are
/// <see cref="NuqChannelCodec"/> (per-channel, pre-RoPE) or <see cref="NuqTokenCodec"/> (":token"); values are
/// <see cref="NuqTokenCodec"/>. Calibrated data comes from a <see cref="KvQuantProfile"/> in the codec context.
/// </summary>
public static class KvQuantCodecs
{
    private static int _registered;

#pragma warning disable CA2255 // The registry has no other hook for codec families that live in their own folder.
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void RegisterOnLoad() => Register();

    /// <summary>Adds the family to <see cref="KvCodecRegistry"/> (once).</summary>
    public static void Register()
    {
        if (Interlocked.Exchange(ref _registered, 1) != 0) return;
        foreach (int bits in new[] { 4, 3, 2 })
        {
            // "nuqB-1%" parses the whole family (any fraction and modifiers); "nuqB" is listed for the dense-only variant.
            KvCodecRegistry.Register(new KvFormat($"nuq{bits}-1%",
                $"KVQuant {bits}-bit non-uniform, 1% outliers kept exact (calibrated: needs --profile); any -F%, and modifiers " +
                ":uniform :token :post :qnorm :slotsN :mixed :mixedkv :clip :wDDD.. (docs/kvquant.md)", KvQuantSpec.TryParse), KvQuantSpec.Prefix);
            KvCodecRegistry.Register(new KvFormat($"nuq{bits}", $"KVQuant {bits}-bit non-uniform, dense only (calibrated: needs --profile)",
                KvQuantSpec.TryParse));
        }
    }

    public static KvCodec Create(KvQuantSpec spec, KvCodecContext ctx)
    {
        // Without :marginM the split is the one the profile's codebooks were fitted at (1.5 unless calibrated otherwise).
        if (!spec.MarginGiven && ctx.Profile is KvQuantProfile p) spec = spec with { ValueMargin = p.Settings.ValueMargin };
        var codec = CreateStored(spec, ctx);
        // A profile that chose the rotation per layer (kvq calibrate --rotate auto) fitted this layer's side rotated: the
        // codec stores the rotated vectors, exactly as FORMAT:rot@L with a merged profile would.
        return RotatedByProfile(spec, ctx) ? new Rotation.RotatedCodec(spec.Name, codec) : codec;
    }

    /// <summary>Whether the profile stores this layer's side rotated (<see cref="KvQuantCalibration.Rotates"/>).</summary>
    internal static bool RotatedByProfile(KvQuantSpec spec, KvCodecContext ctx) =>
        ctx.Profile is KvQuantProfile p
        && p.Calibrations.FirstOrDefault(c => Math.Abs(c.OutlierFraction - spec.OutlierFraction) < 1e-9) is { } cal
        && cal.Rotates(ctx.Side, ctx.Layer);

    private static KvCodec CreateStored(KvQuantSpec spec, KvCodecContext ctx)
    {
        var stream = KvQuantStreams.For(ctx.Side, spec);
        // A plan chose the layer's width already (KvQuantSpec.ForLayers); a lone codec allocates for itself.
        if ((spec.Mixed || spec.LayerBits != null) && !spec.Allocated) spec = spec with { Bits = LayerWidths(spec, ctx)[ctx.Layer], Allocated = true };
        bool perToken = ctx.Side == KvSide.Value || spec.KeyScaling == KeyScaling.PerToken;
        if (perToken)
        {
            var book = spec.Uniform ? NuqCodebook.Uniform(spec.Bits) : Codebook(Calibration(spec, ctx), stream, spec, ctx);
            return new NuqTokenCodec(spec, ctx.Side, ctx.BlockTokens, ctx.HeadDim, book);
        }
        var cal = Calibration(spec, ctx);
        var scales = cal.Keys(spec.PostRope);
        var codebook = spec.Uniform ? NuqCodebook.Uniform(spec.Bits) : Codebook(cal, stream, spec, ctx);
        return new NuqChannelCodec(spec, ctx.Side, ctx.BlockTokens, ctx.HeadDim,
            scales.Zeros(ctx.Layer, ctx.KvHead), scales.Ranges(ctx.Layer, ctx.KvHead), codebook);
    }

    /// <summary>Per-layer widths under a <c>:mixed</c> spec: the allocation of spec.Bits mean bits over the profile's
    /// layers that minimises the summed calibration error of this side's codebooks.</summary>
    internal static int[] LayerWidths(KvQuantSpec spec, KvCodecContext ctx)
    {
        var cal = Calibration(spec, ctx);
        int layers = ((KvQuantProfile)ctx.Profile!).Layers;
        if (spec.LayerBits != null)
            return spec.LayerBits.Length == layers ? spec.LayerBits
                : throw new KvSpecException($"'{spec.Name}': {spec.LayerBits.Length} layer widths for a profile of {layers} layers");
        if (!spec.Joint) return AllocateLayers(spec, [KvQuantStreams.For(ctx.Side, spec)], cal, layers);
        // Keys and values together: one allocation over 2 x layers slots (keys first), this side's half returned.
        var both = AllocateLayers(spec, [KvQuantStreams.For(KvSide.Key, spec), KvQuantStreams.For(KvSide.Value, spec)], cal, layers);
        return ctx.Side == KvSide.Key ? both[..layers] : both[layers..];
    }

    private static int[] AllocateLayers(KvQuantSpec spec, KvQuantStream[] streams, KvQuantCalibration cal, int layers)
    {
        var widths = KvQuantProfile.MixedWidths(spec.Bits);
        var sens = new double[layers * streams.Length][];
        for (int j = 0; j < sens.Length; j++)
        {
            int l = j % layers;
            var stream = streams[j / layers];
            sens[j] = new double[widths.Length];
            for (int i = 0; i < sens[j].Length; i++)
            {
                int b = widths[i];
                var book = cal.Codebook(stream, l, b)
                           ?? throw new KvSpecException($"'{spec.Name}': the profile has no {b}-bit codebook for {stream.Describe()} in layer {l} " +
                                                        "(profiles before 1-bit codebooks: run 'kvq calibrate' again)");
                if (double.IsNaN(book.Sensitivity))
                    throw new KvSpecException($"'{spec.Name}': the profile has no calibration errors for its codebooks (written by an " +
                                              "older kvq); run 'kvq calibrate' again to use :mixed");
                sens[j][i] = book.Sensitivity;
            }
        }
        return KvQuantBitAllocation.Allocate(sens, widths, spec.Bits);
    }

    private static KvQuantCalibration Calibration(KvQuantSpec spec, KvCodecContext ctx)
    {
        if (ctx.Profile is null)
            throw new KvSpecException($"'{spec.Name}' ({ctx.Side.ToString().ToLowerInvariant()}s, head dim {ctx.HeadDim}) needs a calibration profile: " +
                                      "run 'kvq calibrate' and pass --profile");
        if (ctx.Profile is not KvQuantProfile p)
            throw new KvSpecException($"'{spec.Name}' needs a KVQuant profile, not {ctx.Profile.GetType().Name}");
        if (ctx.HeadDim != p.HeadDim || ctx.Layer >= p.Layers || ctx.KvHead >= p.KvHeads)
            throw new KvSpecException($"'{spec.Name}': the profile is for {p.Layers} layers x {p.KvHeads} KV heads x head dim {p.HeadDim}, " +
                                      $"asked for layer {ctx.Layer}, head {ctx.KvHead}, head dim {ctx.HeadDim}");
        return p.For(spec.OutlierFraction, spec.Name);
    }

    private static NuqCodebook Codebook(KvQuantCalibration cal, KvQuantStream stream, KvQuantSpec spec, KvCodecContext ctx) =>
        cal.Codebook(stream, ctx.Layer, spec.Bits)
        ?? throw new KvSpecException($"'{spec.Name}': the profile has no {spec.Bits}-bit codebook for {stream.Describe()} in layer {ctx.Layer}");
}
