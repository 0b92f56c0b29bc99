namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// KVQuant's static per-channel key scaling: for every (layer, KV head, channel), zero = (hi + lo) / 2 and
/// range = (hi - lo) / 2 from calibration percentiles, so that (k - zero) / range lies in [-1, 1] for non-outliers.
/// Arrays are (layer, head, channel) row-major.
/// </summary>
public sealed class ChannelScales
{
    public int Layers { get; }
    public int KvHeads { get; }
    public int HeadDim { get; }
    public float[] Zero { get; }
    public float[] Range { get; }

    public ChannelScales(int layers, int kvHeads, int headDim, float[] zero, float[] range)
    {
        long n = (long)layers * kvHeads * headDim;
        if (zero.Length != n || range.Length != n)
            throw new ArgumentException($"channel scales: expected {n} zeros and ranges, got {zero.Length} and {range.Length}");
        for (int i = 0; i < n; i++)
            if (!float.IsFinite(zero[i]) || !(range[i] > 0) || !float.IsFinite(range[i]))
                throw new ArgumentException($"channel scales: entry {i} has zero {zero[i]}, range {range[i]} (need finite zero and range > 0)");
        Layers = layers;
        KvHeads = kvHeads;
        HeadDim = headDim;
        Zero = zero;
        Range = range;
    }

    private int Offset(int layer, int head) => (layer * KvHeads + head) * HeadDim;
    public ReadOnlySpan<float> Zeros(int layer, int head) => Zero.AsSpan(Offset(layer, head), HeadDim);
    public ReadOnlySpan<float> Ranges(int layer, int head) => Range.AsSpan(Offset(layer, head), HeadDim);
}
