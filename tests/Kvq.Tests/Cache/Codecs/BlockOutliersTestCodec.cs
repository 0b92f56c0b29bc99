using Kvq.Cache.Codecs;
using Kvq.Tensors;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>
/// A codec whose blocks keep sparse rows beside them (<see cref="KvCodec.HasBlockOutliers"/>: KVQuant's outliers) as the
/// shared tests use codecs: one block at a time through the plain overloads. It holds the sparse rows of that one
/// block (<see cref="Rows"/>; <see cref="CodecTestData.Encode"/> clears them before filling a block) and passes them to
/// the wrapped codec, so every generic test runs the real sparse path.
/// </summary>
internal sealed class BlockOutliersTestCodec(KvCodec inner) : KvCodec(inner.BlockTokens, inner.HeadDim), IKvCodecReference
{
    public KvCodec Inner => inner;
    public BlockOutliers Rows { get; } = new();

    public override string Name => inner.Name;
    public override KvBytes BlockLayout => inner.BlockLayout;
    public override bool PreRope => inner.PreRope;
    public override bool EncodesWholeBlocks => inner.EncodesWholeBlocks;
    public override int ResidualTokens => inner.ResidualTokens;
    protected override TokenSection[]? DescribeTokenSections() => inner.TokenSections;

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) => inner.EncodeToken(x, block, Rows, slot);
    public override void EncodeBlock(ReadOnlySpan<float> xs, Span<byte> block) => inner.EncodeBlock(xs, block, Rows);
    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) => inner.DecodeBlock(block, Rows, count, dst);

    public override void Scores(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile) =>
        inner.Scores(block, Rows, count, q, nq, scores, tile);

    public override void ScoresPreRope(ReadOnlySpan<byte> block, int count, ReadOnlySpan<int> positions, Rope rope, ReadOnlySpan<float> q,
        int nq, Span<float> scores, Span<float> tile) => inner.ScoresPreRope(block, Rows, count, positions, rope, q, nq, scores, tile);

    public override void Accumulate(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile) =>
        inner.Accumulate(block, Rows, count, w, nq, acc, tile);

    /// <summary>Within the one block (source and destination share the rows).</summary>
    public override void CopySlot(ReadOnlySpan<byte> src, int srcSlot, Span<byte> dst, int dstSlot) =>
        inner.CopySlot(src, Rows, srcSlot, dst, Rows, dstSlot);

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst) =>
        ((IKvCodecReference)inner).DecodeBlockReference(block, Rows, count, dst);

    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound) => ((IKvCodecReference)inner).MaxAbsError(xs, bound);
}
