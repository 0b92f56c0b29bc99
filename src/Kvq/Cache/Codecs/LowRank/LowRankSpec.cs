using System.Globalization;

namespace Kvq.Cache.Codecs.LowRank;

/// <summary>
/// A parsed low-rank spec: <c>lrR+FORMAT</c>, e.g. <c>lr32+f16</c> or <c>lr16+int4</c>. Vectors are projected onto the
/// first R calibrated principal directions of their (layer, KV head) and the R-dim latent is stored in FORMAT (any
/// registered format, built with head dim R). '+' because '/' separates keys from values and ':' belongs to the nuq
/// modifiers, so <c>--kv lr32+f16/f16</c> reads as "keys: rank-32 latent in f16; values: f16".
/// <c>lrRh+FORMAT</c> (R a power of two) stores the latent in a Walsh-Hadamard-rotated basis of the same subspace
/// (Palu's remedy for per-token quantization of the latent): principal coordinates have very unequal variances, so a
/// per-token group's scale is set by the first few; the rotation spreads the variance evenly over the R channels.
/// </summary>
public sealed record LowRankSpec(string Name, int Rank, string Inner, bool Hadamard = false) : KvCodecSpec(Name)
{
    public override KvCodec Create(KvCodecContext context) => LowRankCodecs.Create(this, context);

    public const string Prefix = "lr";

    /// <summary>Null when the name is not of the family (does not start with "lr" and a digit); throws on a malformed one.</summary>
    public static LowRankSpec? TryParse(string name)
    {
        if (name.Length <= Prefix.Length || !name.StartsWith(Prefix, StringComparison.Ordinal) || !char.IsAsciiDigit(name[Prefix.Length]))
            return null;
        int plus = name.IndexOf('+');
        if (plus < 0)
            throw new KvSpecException($"'{name}': expected lrR+FORMAT, the rank and the latent's format (e.g. lr32+f16, lr16+int4)");
        var rankText = name[Prefix.Length..plus];
        bool hadamard = rankText.EndsWith('h');
        if (hadamard) rankText = rankText[..^1];
        if (!int.TryParse(rankText, NumberStyles.None, CultureInfo.InvariantCulture, out int rank) || rank < 1)
            throw new KvSpecException($"'{name}': rank '{rankText}' must be a whole number >= 1 (optionally followed by h: Hadamard-rotated latent)");
        if (hadamard && (rank & (rank - 1)) != 0)
            throw new KvSpecException($"'{name}': a Hadamard-rotated latent needs a power-of-two rank, not {rank}");
        var inner = name[(plus + 1)..];
        if (inner.Length == 0)
            throw new KvSpecException($"'{name}': the latent's format is missing after '+' (e.g. lr{rank}+f16)");
        if (TryParse(inner) is not null)
            throw new KvSpecException($"'{name}': a low-rank latent cannot itself be low-rank (use one lrR with the smaller rank)");
        return new LowRankSpec(name, rank, inner, hadamard);
    }
}
