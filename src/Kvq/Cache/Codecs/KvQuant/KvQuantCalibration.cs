namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// Everything calibrated for one outlier fraction (0 = dense only, scales from min/max): per-channel key scales
/// before and after RoPE, and codebooks per (stream, layer, bits).
/// <para>A calibration may store some layers' sides in the Walsh-Hadamard-rotated basis (<c>kvq calibrate --rotate
/// auto</c>: the rotation chosen per layer and side where it lowers the calibration error). Those layers' scales and
/// codebooks are the rotated fit's, and every nuq codec of that layer and side stores rotated vectors
/// (<see cref="Rotates"/>), with no <c>:rot</c> in the spec.</para>
/// </summary>
public sealed class KvQuantCalibration
{
    public double OutlierFraction { get; }
    public ChannelScales KeysPreRope { get; }
    public ChannelScales KeysPostRope { get; }
    private readonly Dictionary<(KvQuantStream, int, int), NuqCodebook> _codebooks;
    private readonly bool[] _rotatedKeys, _rotatedValues;

    /// <param name="rotatedKeyLayers">Layers whose keys (scales and key codebooks) were fitted rotated and are stored
    /// rotated; null or empty = none.</param>
    /// <param name="rotatedValueLayers">Layers whose values were fitted rotated and are stored rotated.</param>
    public KvQuantCalibration(double outlierFraction, ChannelScales keysPreRope, ChannelScales keysPostRope,
        IEnumerable<(KvQuantStream Stream, int Layer, NuqCodebook Codebook)> codebooks,
        IEnumerable<int>? rotatedKeyLayers = null, IEnumerable<int>? rotatedValueLayers = null)
    {
        OutlierFraction = outlierFraction;
        KeysPreRope = keysPreRope;
        KeysPostRope = keysPostRope;
        _rotatedKeys = LayerFlags(rotatedKeyLayers, keysPreRope.Layers, "key");
        _rotatedValues = LayerFlags(rotatedValueLayers, keysPreRope.Layers, "value");
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

    /// <summary>Whether any layer of either side is stored rotated.</summary>
    public bool RotatesAny => Array.IndexOf(_rotatedKeys, true) >= 0 || Array.IndexOf(_rotatedValues, true) >= 0;

    /// <summary>Whether <paramref name="side"/> of <paramref name="layer"/> was fitted, and is stored, rotated.</summary>
    public bool Rotates(KvSide side, int layer) =>
        (uint)layer < (uint)_rotatedKeys.Length && (side == KvSide.Key ? _rotatedKeys : _rotatedValues)[layer];

    /// <summary>The rotated layers of <paramref name="side"/>, ascending.</summary>
    public int[] RotatedLayers(KvSide side)
    {
        var flags = side == KvSide.Key ? _rotatedKeys : _rotatedValues;
        return [.. Enumerable.Range(0, flags.Length).Where(l => flags[l])];
    }

    private static bool[] LayerFlags(IEnumerable<int>? layers, int count, string side)
    {
        var flags = new bool[count];
        if (layers == null) return flags;
        foreach (int l in layers)
        {
            if (l < 0 || l >= count) throw new ArgumentException($"rotated {side} layer {l} of {count}");
            if (flags[l]) throw new ArgumentException($"rotated {side} layer {l} named twice");
            flags[l] = true;
        }
        return flags;
    }

    public ChannelScales Keys(bool postRope) => postRope ? KeysPostRope : KeysPreRope;

    public NuqCodebook? Codebook(KvQuantStream stream, int layer, int bits) =>
        _codebooks.TryGetValue((stream, layer, bits), out var c) ? c : null;
}
