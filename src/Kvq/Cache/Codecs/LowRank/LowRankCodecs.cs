using System.Runtime.CompilerServices;

namespace Kvq.Cache.Codecs.LowRank;

/// <summary>
/// The low-rank family in the codec registry: <c>lrR+FORMAT</c> (<see cref="LowRankSpec"/>) for keys or values. The
/// bases come from a profile calibrated with <c>kvq calibrate --lowrank</c> (<see cref="ILowRankProfile"/>); the
/// same profile reaches the inner codec, so a calibrated latent format would find it there.
/// </summary>
public static class LowRankCodecs
{
    private static int _registered;

#pragma warning disable CA2255 // The registry has no other hook for codec families that live in their own folder.
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void RegisterOnLoad() => Register();

    /// <summary>The name the registry lists for the family (any lrR+FORMAT is accepted).</summary>
    public const string ListedName = "lr16+int4";

    public static void Register()
    {
        if (Interlocked.Exchange(ref _registered, 1) != 0) return;
        KvCodecRegistry.Register(new KvFormat(ListedName,
            "low-rank (Palu-style): project onto the first R calibrated principal directions of the layer and KV head " +
            "(keys before RoPE) and store the R-dim latent in FORMAT; any lrR+FORMAT, e.g. lr32+f16, or lrRh+FORMAT for a Hadamard-rotated latent (needs --profile from 'kvq calibrate --lowrank')",
            LowRankSpec.TryParse), LowRankSpec.Prefix);
    }

    public static LowRankCodec Create(LowRankSpec spec, KvCodecContext ctx)
    {
        string where = $"{ctx.Side.ToString().ToLowerInvariant()}s of layer {ctx.Layer}, KV head {ctx.KvHead}";
        if (spec.Rank > ctx.HeadDim)
            throw new KvSpecException($"'{spec.Name}': rank {spec.Rank} exceeds head dim {ctx.HeadDim} ({where})");
        if (ctx.Profile is not ILowRankProfile { LowRank: { } bases })
            throw new KvSpecException($"'{spec.Name}' ({where}) needs a profile with low-rank bases: run 'kvq calibrate --lowrank' and pass --profile");
        if (bases.HeadDim != ctx.HeadDim || ctx.Layer >= bases.Layers || ctx.KvHead >= bases.KvHeads)
            throw new KvSpecException($"'{spec.Name}': the profile's bases are for {bases.Layers} layers x {bases.KvHeads} KV heads x head dim " +
                                      $"{bases.HeadDim}, asked for {where}, head dim {ctx.HeadDim}");
        var projection = bases.For(ctx.Side, ctx.Layer, ctx.KvHead).Projection(spec.Rank, spec.Hadamard);
        // A latent calibrated at this rank (KVQuant scales and codebooks of the principal coordinates) serves calibrated
        // latent formats; the Hadamard basis has other coordinates, so it gets the outer profile and nuq refuses it.
        var latentProfile = spec.Hadamard || ctx.Side != KvSide.Key ? null : ((ILowRankProfile)ctx.Profile).LatentProfile(spec.Rank);
        KvCodec inner;
        try
        {
            inner = KvCodecRegistry.Create(spec.Inner, ctx with { HeadDim = spec.Rank, Profile = latentProfile ?? ctx.Profile });
        }
        catch (KvSpecException e)
        {
            string hint = latentProfile == null && KvQuant.KvQuantSpec.TryParse(spec.Inner) != null
                ? $" (calibrated latent formats need 'kvq calibrate --lowrank-nuq {spec.Rank}', keys only and without h)" : "";
            throw new KvSpecException($"'{spec.Name}': latent format '{spec.Inner}' at head dim {spec.Rank} ({where}): {e.Message}{hint}");
        }
        if (inner.BlockTokens != ctx.BlockTokens)
            throw new KvSpecException($"'{spec.Name}': latent format '{spec.Inner}' has blocks of {inner.BlockTokens} tokens, the cache {ctx.BlockTokens}");
        return new LowRankCodec(spec.Name, ctx.Side, projection, inner);
    }
}
