namespace Kvq.Cache.Codecs;

/// <summary>
/// KIVI (Liu et al. 2024, "KIVI: a tuning-free asymmetric 2bit quantization for KV cache"): keys per-channel over
/// groups of 32 tokens, values per-token over groups of 32 channels, both asymmetric (min/max, f16 scale and zero),
/// and the most recent 128 tokens of both kept in f16 (KIVI's residual, as its code keeps it for keys and values).
/// Here a group of 32 tokens is one cache block, so the cache's block size must be 32; tokens wait in the
/// sequence's f16 staging until a whole block of them is older than the 128-token window, then the block is encoded
/// at once (for values too, though per-token codes would not need to wait).
/// The storage formats are <see cref="UniformChannelCodec"/> (keys) and <see cref="UniformTokenCodec"/> (values).
/// </summary>
public sealed class KiviCodec : KvCodec, IKvCodecReference
{
    /// <summary>Tokens per key quantization group (= block size).</summary>
    public const int GroupTokens = 32;
    /// <summary>Channels per value quantization group (or the head dim if smaller).</summary>
    public const int GroupChannels = 32;
    /// <summary>Recent tokens kept in f16 (KIVI's residual length R).</summary>
    public const int Residual = 128;

    private readonly KvCodec _inner;
    private readonly IKvCodecReference _reference;
    private readonly string _name;

    public int Bits { get; }
    public KvSide Side { get; }

    public KiviCodec(int bits, KvSide side, int blockTokens, int headDim) : base(blockTokens, headDim)
    {
        _name = $"kivi{bits}";
        if (blockTokens != GroupTokens)
            throw new KvSpecException($"{_name} quantizes keys per channel over groups of {GroupTokens} tokens, one cache block each; " +
                $"the cache's block size is {blockTokens} tokens (use {GroupTokens})");
        Bits = bits;
        Side = side;
        var inner = side == KvSide.Key
            ? (KvCodec)new UniformChannelCodec(_name, bits, blockTokens, headDim)
            : new UniformTokenCodec(_name, bits, Math.Min(GroupChannels, headDim), blockTokens, headDim);
        _inner = inner;
        _reference = (IKvCodecReference)inner;
    }

    public override string Name => _name;
    public override KvBytes BlockLayout => _inner.BlockLayout;
    public override bool EncodesWholeBlocks => true;
    public override int ResidualTokens => Residual;

    public override void EncodeBlock(ReadOnlySpan<float> xs, Span<byte> block) => _inner.EncodeBlock(xs, block);
    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) => _inner.DecodeBlock(block, count, dst);

    public override void Scores(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile) =>
        _inner.Scores(block, count, q, nq, scores, tile);

    public override void Accumulate(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile) =>
        _inner.Accumulate(block, count, w, nq, acc, tile);

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst) => _reference.DecodeBlockReference(block, count, dst);
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound) => _reference.MaxAbsError(xs, bound);
}
