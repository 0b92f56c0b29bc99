using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Cuda.Attention;

/// <summary>
/// What the GPU layout needs from a KVQuant calibration for one layer: per (KV head, channel) pre-RoPE key zero and
/// range, and the layer's key and value codebooks (the CPU codecs' <see cref="NuqCodebook"/>, so both sides decode
/// the same levels). Built from a <see cref="KvQuantProfile"/> or from any calibration sample.
/// </summary>
public sealed class NuqLayerProfile
{
    public int KvHeads { get; }
    public int HeadDim { get; }
    public float[] KeyZero { get; }
    public float[] KeyRange { get; }
    public NuqCodebook KeyCodebook { get; }
    public NuqCodebook ValueCodebook { get; }
    public int Bits => KeyCodebook.Bits;

    public NuqLayerProfile(int kvHeads, int headDim, float[] keyZero, float[] keyRange, NuqCodebook keys, NuqCodebook values)
    {
        if (keyZero.Length != kvHeads * headDim || keyRange.Length != kvHeads * headDim)
            throw new ArgumentException($"key scales: {keyZero.Length} zeros, {keyRange.Length} ranges for {kvHeads} x {headDim}");
        if (keys.Bits != values.Bits) throw new ArgumentException($"key codebook {keys.Bits} bits, value codebook {values.Bits}");
        KvHeads = kvHeads;
        HeadDim = headDim;
        KeyZero = keyZero;
        KeyRange = keyRange;
        KeyCodebook = keys;
        ValueCodebook = values;
    }

    /// <summary>Layer <paramref name="layer"/> of a real profile at <paramref name="bits"/> and the outlier fraction.</summary>
    public static NuqLayerProfile From(KvQuantProfile p, int layer, int bits, double fraction)
    {
        var c = p.For(fraction, $"nuq{bits}");
        if (c.Rotates(Cache.Codecs.KvSide.Key, layer) || c.Rotates(Cache.Codecs.KvSide.Value, layer))
            throw new ArgumentException($"the profile stores layer {layer} Hadamard-rotated (kvq calibrate --rotate auto); the device's nuq layout has no rotation: use a profile calibrated without --rotate");
        if (p.Settings.ValueMargin != KvQuantSpec.ValueOutlierMargin)
            throw new ArgumentException($"the profile's value codebooks were fitted at outlier margin {p.Settings.ValueMargin} (kvq calibrate --value-margin); the device's nuq layout splits at {KvQuantSpec.ValueOutlierMargin}: use a profile calibrated without --value-margin");
        var s = c.KeysPreRope;
        int n = s.KvHeads * s.HeadDim, off = layer * n;
        var kcb = c.Codebook(KvQuantStream.KeyChannelPreRope, layer, bits) ?? throw new ArgumentException($"profile has no {bits}-bit key codebook for layer {layer}");
        var vcb = c.Codebook(KvQuantStream.Value, layer, bits) ?? throw new ArgumentException($"profile has no {bits}-bit value codebook for layer {layer}");
        return new NuqLayerProfile(s.KvHeads, s.HeadDim, s.Zero.AsSpan(off, n).ToArray(), s.Range.AsSpan(off, n).ToArray(), kcb, vcb);
    }
}
