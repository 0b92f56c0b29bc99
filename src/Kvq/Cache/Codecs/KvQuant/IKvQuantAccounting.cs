namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// KVQuant's own bits-per-element accounting, next to the exact bytes of <see cref="KvCodec.BlockLayout"/>: B bits
/// of code, each f16 scale or zero amortised over its vector, 32 bits (f16 value + 16-bit index) per outlier and a
/// 32-bit per-token pointer into the sparse part (only with outliers). Vectors here are one KV head (HeadDim values).
/// </summary>
public interface IKvQuantAccounting
{
    double KvQuantBitsPerElement { get; }
    KvQuantCounters Counters { get; }
}

public static class KvQuantAccounting
{
    /// <summary>Per-channel keys: static scales (amortised over all tokens: ~0), nominal outlier fraction.</summary>
    public static double PerChannel(int bits, double outlierFraction, int vectorLength) =>
        bits + 32 * outlierFraction + (outlierFraction > 0 ? 32.0 / vectorLength : 0);

    /// <summary>Per-token scaling: f16 scale + zero per vector and 2k outliers per vector.</summary>
    public static double PerToken(int bits, int outliersPerVector, int vectorLength) =>
        bits + 32.0 / vectorLength + 32.0 * outliersPerVector / vectorLength + (outliersPerVector > 0 ? 32.0 / vectorLength : 0);
}
