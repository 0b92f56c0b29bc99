namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// Which normalized distribution a codebook was fitted on: keys scaled per channel (KVQuant) or per token (ablation),
/// before or after RoPE, or values (always per token). Each has its own codebook per layer and bit width.
/// </summary>
public enum KvQuantStream : byte
{
    KeyChannelPreRope = 0,
    KeyChannelPostRope = 1,
    KeyTokenPreRope = 2,
    KeyTokenPostRope = 3,
    Value = 4,
}

public static class KvQuantStreams
{
    public static readonly KvQuantStream[] All =
        [KvQuantStream.KeyChannelPreRope, KvQuantStream.KeyChannelPostRope, KvQuantStream.KeyTokenPreRope, KvQuantStream.KeyTokenPostRope, KvQuantStream.Value];

    public static bool IsPerChannel(this KvQuantStream s) => s is KvQuantStream.KeyChannelPreRope or KvQuantStream.KeyChannelPostRope;
    public static bool IsPostRope(this KvQuantStream s) => s is KvQuantStream.KeyChannelPostRope or KvQuantStream.KeyTokenPostRope;
    public static bool IsKey(this KvQuantStream s) => s != KvQuantStream.Value;

    /// <summary>The stream a spec reads on one side.</summary>
    public static KvQuantStream For(KvSide side, KvQuantSpec spec) => side == KvSide.Value ? KvQuantStream.Value
        : (spec.KeyScaling, spec.PostRope) switch
        {
            (KeyScaling.PerChannel, false) => KvQuantStream.KeyChannelPreRope,
            (KeyScaling.PerChannel, true) => KvQuantStream.KeyChannelPostRope,
            (KeyScaling.PerToken, false) => KvQuantStream.KeyTokenPreRope,
            _ => KvQuantStream.KeyTokenPostRope,
        };

    public static string Describe(this KvQuantStream s) => s switch
    {
        KvQuantStream.KeyChannelPreRope => "keys per channel, pre-RoPE",
        KvQuantStream.KeyChannelPostRope => "keys per channel, post-RoPE",
        KvQuantStream.KeyTokenPreRope => "keys per token, pre-RoPE",
        KvQuantStream.KeyTokenPostRope => "keys per token, post-RoPE",
        _ => "values per token",
    };
}
