namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// KVQuant's bits-per-element accounting at the nominal outlier fraction, next to the exact bytes the cache holds
/// (<see cref="KvCodec.BlockLayout"/> plus the sparse rows beside each block): B bits of code, the token's packed
/// scale amortised over its vector (values), and per outlier an f16 value plus a packed index of
/// ceil(log2(T*D)) bits in the block's sparse rows, plus their 3-byte header per block.
/// Vectors here are one KV head (HeadDim values).
/// </summary>
public interface IKvQuantAccounting
{
    double KvQuantBitsPerElement { get; }
}

public static class KvQuantAccounting
{
    private static double Sparse(double outlierFraction, int vectorLength, int blockTokens) => outlierFraction <= 0 ? 0
        : outlierFraction * (16 + BlockOutliers.IndexBitsFor(blockTokens, vectorLength)) + 24.0 / ((double)blockTokens * vectorLength);

    /// <summary>Per-channel keys: static scales (in the profile: ~0 per element), nominal outlier fraction.</summary>
    public static double PerChannel(int bits, double outlierFraction, int vectorLength, int blockTokens) =>
        bits + Sparse(outlierFraction, vectorLength, blockTokens);

    /// <summary>Per-token scaling: a 16-bit packed zero and range per vector, nominal outlier fraction.</summary>
    public static double PerToken(int bits, double outlierFraction, int vectorLength, int blockTokens) =>
        bits + 16.0 / vectorLength + Sparse(outlierFraction, vectorLength, blockTokens);
}
