using Kvq.Cache.Codecs;

namespace Kvq.Cache;

/// <summary>What formats a cache stores keys and values in, and its block size in tokens.</summary>
/// <param name="SinkTokens">The first tokens of every sequence additionally kept in f16 and read from there
/// (attention sinks, as KVQuant keeps them exact).</param>
/// <param name="Profile">Calibration data for calibrated formats (KVQuant); must belong to the model.</param>
/// <param name="Policy">Which tokens stay (eviction, merging) and the budget; null = every token stays.</param>
/// <param name="Offload">Every token stays, but attention reads only the blocks a per-block key bound picks under this
/// budget (Quest-style selection, <see cref="Offload.BlockSelector"/>); null = every block is read.</param>
public sealed record KvCacheConfig(string KeyFormat, string ValueFormat, int BlockTokens = 32, int SinkTokens = 0,
    IKvProfile? Profile = null, Policies.KvPolicyConfig? Policy = null, Offload.KvOffloadBudget? Offload = null)
{
    /// <summary>The file tier: keep the blocks in memory-mapped temporary files in this folder (deleted when the cache
    /// is collected or the process ends) instead of RAM; null = RAM. Where the bytes live changes no result.</summary>
    public string? BlockDirectory { get; init; }

    /// <summary>
    /// Sliding-window layers keep only the blocks their window can still see, in a pool of their own per layer (a ring:
    /// a block the window has passed goes back to that pool and takes the next tokens), so such a layer's memory is
    /// bounded by its window instead of growing with the sequence; logits are those of full storage. Such a cache shares
    /// no prefixes between sequences and its sequences cannot be forked, swapped or saved yet; token policies, offloading,
    /// staging codecs (KIVI's residual) and sink tokens are refused with it. False: every layer stores every token.
    /// </summary>
    public bool SlidingRing { get; init; }

    /// <summary>The name used in reports: "f16", or "q4_0/f16" when keys and values differ; with a policy,
    /// "f16 h2o@25%"; offloaded, "f16 offload@25%".</summary>
    public string Name => FormatName + (Policy is { } p ? " " + p.Name : "") + (Offload is { } o ? " " + o.Name : "");

    /// <summary>The formats alone: "f16", "q4_0/f16".</summary>
    public string FormatName => KeyFormat == ValueFormat ? KeyFormat : $"{KeyFormat}/{ValueFormat}";

    /// <summary>Parses "NAME" (both) or "KEYS/VALUES".</summary>
    public static KvCacheConfig Parse(string spec, int blockTokens = 32)
    {
        spec = spec.Trim();
        if (spec.Length == 0) throw new KvSpecException("empty KV spec");
        var parts = spec.Split('/');
        if (parts.Length > 2) throw new KvSpecException($"KV spec '{spec}': expected NAME or KEYS/VALUES");
        if (parts.Length == 2 && (parts[0].Trim().Length == 0 || parts[1].Trim().Length == 0))
            throw new KvSpecException($"KV spec '{spec}': the {(parts[0].Trim().Length == 0 ? "keys'" : "values'")} format is missing " +
                                      "(KEYS/VALUES, e.g. q4_0/f16)");
        return new KvCacheConfig(parts[0], parts.Length == 2 ? parts[1] : parts[0], blockTokens);
    }

    public KvCodec CreateKeyCodec(int headDim) => KvCodecRegistry.Create(KeyFormat, KvSide.Key, BlockTokens, headDim);
    public KvCodec CreateValueCodec(int headDim) => KvCodecRegistry.Create(ValueFormat, KvSide.Value, BlockTokens, headDim);

    /// <summary>The codec of one (side, layer, KV head).</summary>
    public KvCodec CreateCodec(KvSide side, int layer, int kvHead, int headDim) =>
        KvCodecRegistry.Create(side == KvSide.Key ? KeyFormat : ValueFormat,
            new KvCodecContext(side, BlockTokens, headDim, layer, kvHead, Profile));
}
