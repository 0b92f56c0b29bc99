namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// Everything calibrated for one outlier fraction (0 = dense only, scales from min/max): per-channel key scales
/// before and after RoPE, and codebooks per (stream, layer, bits).
/// </summary>
public sealed class KvQuantCalibration
{
    public double OutlierFraction { get; }
    public ChannelScales KeysPreRope { get; }
    public ChannelScales KeysPostRope { get; }
    private readonly Dictionary<(KvQuantStream, int, int), NuqCodebook> _codebooks;

    public KvQuantCalibration(double outlierFraction, ChannelScales keysPreRope, ChannelScales keysPostRope,
        IEnumerable<(KvQuantStream Stream, int Layer, NuqCodebook Codebook)> codebooks)
    {
        OutlierFraction = outlierFraction;
        KeysPreRope = keysPreRope;
        KeysPostRope = keysPostRope;
        _codebooks = [];
        foreach (var (s, l, c) in codebooks)
            if (!_codebooks.TryAdd((s, l, c.Bits), c))
                throw new ArgumentException($"duplicate codebook: {s.Describe()}, layer {l}, {c.Bits} bits");
    }

    public IEnumerable<(KvQuantStream Stream, int Layer, NuqCodebook Codebook)> Codebooks
    {
        get
        {
            foreach (var ((s, l, _), c) in _codebooks.OrderBy(e => e.Key)) yield return (s, l, c);
        }
    }

    public ChannelScales Keys(bool postRope) => postRope ? KeysPostRope : KeysPreRope;

    public NuqCodebook? Codebook(KvQuantStream stream, int layer, int bits) =>
        _codebooks.TryGetValue((stream, layer, bits), out var c) ? c : null;
}
