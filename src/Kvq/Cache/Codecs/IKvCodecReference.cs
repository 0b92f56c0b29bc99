namespace Kvq.Cache.Codecs;

/// <summary>
/// The oracles a lossy codec carries for its tests (ggml's habit: every SIMD path checked against a plain
/// reference, with an error budget): a scalar twin of <see cref="KvCodec.DecodeBlock"/>, and the largest absolute
/// error the codec promises for each value it is given.
/// </summary>
public interface IKvCodecReference
{
    /// <summary>Scalar twin of <see cref="KvCodec.DecodeBlock"/>; must give bit-identical output.</summary>
    void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst);

    /// <summary>The scalar twin with the block's sparse part (<see cref="KvCodec.HasBlockOutliers"/>).</summary>
    void DecodeBlockReference(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst) =>
        DecodeBlockReference(block, count, dst);

    /// <summary>
    /// bound[i] = the largest |decode(encode(x))[i] - x[i]| this codec allows, for the tokens
    /// <paramref name="xs"/> (n, HeadDim) encoded together: any n for per-token codecs, exactly BlockTokens for
    /// whole-block codecs. Computed from the values alone (their ranges and the codec's step size), not from an
    /// encoding.
    /// </summary>
    void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound);
}
