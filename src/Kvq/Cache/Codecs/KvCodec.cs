namespace Kvq.Cache.Codecs;

/// <summary>
/// One storage format for the vectors of one KV head: how a block of <see cref="BlockTokens"/> tokens x
/// <see cref="HeadDim"/> values is laid out in bytes, how tokens are encoded into it and how it is read back.
/// Per-token codecs encode each token as it arrives; per-channel codecs (<see cref="EncodesWholeBlocks"/>) need the
/// whole block and leave recent tokens staged in f16 until then. Attention reads blocks through
/// <see cref="DecodeBlock"/> into a small tile (never the whole cache); codecs may override the fused
/// <see cref="Scores"/> / <see cref="Accumulate"/> with faster kernels that must agree with the tile path.
/// </summary>
public abstract class KvCodec
{
    protected KvCodec(int blockTokens, int headDim)
    {
        BlockTokens = blockTokens;
        HeadDim = headDim;
    }

    /// <summary>The spec name this codec answers to (as the CLI takes it).</summary>
    public abstract string Name { get; }
    public int BlockTokens { get; }
    public int HeadDim { get; }

    /// <summary>Bytes of one block (one KV head), by kind.</summary>
    public abstract KvBytes BlockLayout { get; }
    public int BlockBytes => (int)BlockLayout.Total;

    /// <summary>Stored bits per value of a full block, metadata included.</summary>
    public double BitsPerElement => BlockBytes * 8.0 / ((double)BlockTokens * HeadDim);

    /// <summary>Whether keys are stored before RoPE (attention rotates them at their positions after decoding).</summary>
    public virtual bool PreRope => false;

    /// <summary>True when a block can only be encoded once all its tokens are present (per-channel scaling).</summary>
    public virtual bool EncodesWholeBlocks => false;

    /// <summary>Recent tokens kept in f16 beyond the partial block (KIVI's residual window), in tokens.</summary>
    public virtual int ResidualTokens => 0;

    /// <summary>Encodes one token (HeadDim values) into slot <paramref name="slot"/> of a block (per-token codecs).</summary>
    public virtual void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) =>
        throw new NotSupportedException($"{Name} encodes whole blocks only");

    /// <summary>Encodes a full block from (BlockTokens, HeadDim) values (per-channel codecs).</summary>
    public virtual void EncodeBlock(ReadOnlySpan<float> xs, Span<byte> block)
    {
        for (int t = 0; t < BlockTokens; t++) EncodeToken(xs.Slice(t * HeadDim, HeadDim), block, t);
    }

    /// <summary>Decodes the first <paramref name="count"/> tokens of a block into (count, HeadDim) values.</summary>
    public abstract void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst);

    /// <summary>scores[i, j] = q_i . k_j for nq queries (nq, HeadDim) and the first count tokens of a key block.
    /// <paramref name="tile"/> is scratch of at least BlockTokens*HeadDim floats.</summary>
    public virtual void Scores(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        DecodeBlock(block, count, tile);
        Attention.TileMath.Scores(tile[..(count * HeadDim)], count, HeadDim, q, nq, scores);
    }

    /// <summary>Scores against pre-RoPE keys (<see cref="PreRope"/>): scores[i, j] = q_i . R(positions[j]) k_j, with
    /// q already rotated at its own position. positions has count entries (consecutive unless a policy evicted or
    /// merged tokens). Codecs may override with a fused kernel that must agree with this tile path.</summary>
    public virtual void ScoresPreRope(ReadOnlySpan<byte> block, int count, ReadOnlySpan<int> positions, Tensors.Rope rope,
        ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        var t = tile[..(count * HeadDim)];
        DecodeBlock(block, count, t);
        rope.RotateAt(t, count, positions);
        Attention.TileMath.Scores(t, count, HeadDim, q, nq, scores);
    }

    /// <summary>acc[i, :] += sum_j w[i, j] v_j for nq weight rows (nq, count) and the first count tokens of a value block.</summary>
    public virtual void Accumulate(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile)
    {
        DecodeBlock(block, count, tile);
        Attention.TileMath.Accumulate(tile[..(count * HeadDim)], count, HeadDim, w, nq, acc);
    }

    /// <summary>Whether blocks carry a sparse part beside their fixed bytes (<see cref="BlockOutliers"/>: KVQuant's
    /// exact outliers, whose number depends on the data). The cache keeps one per block and head and passes it to the
    /// overloads below; codecs without one ignore it.</summary>
    public virtual bool HasBlockOutliers => false;

    /// <summary>Whether attention reads block 0 under sink rows through this codec's fused kernels and puts the sink
    /// rows' share right afterwards (<see cref="Attention.KeyScores.Block"/>): for codecs whose fused kernels
    /// are much cheaper than decode + tile (KVQuant). Others keep the tile path, whose arithmetic on the sink rows is
    /// the same as on any decoded row (an f16 cache with f16 sink copies gives the same bits as without them).</summary>
    internal virtual bool FusesUnderSink => false;

    /// <summary>Bytes a block's sparse part is expected to hold at the format's nominal outlier rate (planning of budgets;
    /// the cache counts what is really held). 0 without a sparse part.</summary>
    public virtual double ExpectedOutlierBytesPerBlock => 0;

    /// <summary>Values per token in the sparse part's index space (entries of token t sit at t * this + channel):
    /// <see cref="HeadDim"/>, or what a decorator's inner codec stores (a low-rank latent's rank).</summary>
    public virtual int OutlierRowLength => HeadDim;

    /// <summary><see cref="EncodeToken(ReadOnlySpan{float}, Span{byte}, int)"/> with the block's sparse part.</summary>
    public virtual void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, BlockOutliers? outliers, int slot) => EncodeToken(x, block, slot);

    /// <summary><see cref="EncodeBlock(ReadOnlySpan{float}, Span{byte})"/> with the block's sparse part.</summary>
    public virtual void EncodeBlock(ReadOnlySpan<float> xs, Span<byte> block, BlockOutliers? outliers) => EncodeBlock(xs, block);

    /// <summary><see cref="DecodeBlock(ReadOnlySpan{byte}, int, Span{float})"/> with the block's sparse part.</summary>
    public virtual void DecodeBlock(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst) => DecodeBlock(block, count, dst);

    /// <summary><see cref="Scores(ReadOnlySpan{byte}, int, ReadOnlySpan{float}, int, Span{float}, Span{float})"/> with the
    /// block's sparse part.</summary>
    public virtual void Scores(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, ReadOnlySpan<float> q, int nq,
        Span<float> scores, Span<float> tile)
    {
        if (!HasBlockOutliers)
        {
            Scores(block, count, q, nq, scores, tile);
            return;
        }
        DecodeBlock(block, outliers, count, tile);
        Attention.TileMath.Scores(tile[..(count * HeadDim)], count, HeadDim, q, nq, scores);
    }

    /// <summary><see cref="ScoresPreRope(ReadOnlySpan{byte}, int, ReadOnlySpan{int}, Tensors.Rope, ReadOnlySpan{float}, int, Span{float}, Span{float})"/>
    /// with the block's sparse part.</summary>
    public virtual void ScoresPreRope(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, ReadOnlySpan<int> positions,
        Tensors.Rope rope, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        if (!HasBlockOutliers)
        {
            ScoresPreRope(block, count, positions, rope, q, nq, scores, tile);
            return;
        }
        var t = tile[..(count * HeadDim)];
        DecodeBlock(block, outliers, count, t);
        rope.RotateAt(t, count, positions);
        Attention.TileMath.Scores(t, count, HeadDim, q, nq, scores);
    }

    /// <summary><see cref="Accumulate(ReadOnlySpan{byte}, int, ReadOnlySpan{float}, int, Span{float}, Span{float})"/> with
    /// the block's sparse part.</summary>
    public virtual void Accumulate(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, ReadOnlySpan<float> w, int nq,
        Span<float> acc, Span<float> tile)
    {
        if (!HasBlockOutliers)
        {
            Accumulate(block, count, w, nq, acc, tile);
            return;
        }
        DecodeBlock(block, outliers, count, tile);
        Attention.TileMath.Accumulate(tile[..(count * HeadDim)], count, HeadDim, w, nq, acc);
    }

    /// <summary><see cref="CopySlot(ReadOnlySpan{byte}, int, Span{byte}, int)"/> with the blocks' sparse parts.</summary>
    public virtual void CopySlot(ReadOnlySpan<byte> src, BlockOutliers? srcOutliers, int srcSlot, Span<byte> dst,
        BlockOutliers? dstOutliers, int dstSlot) => CopySlot(src, srcSlot, dst, dstSlot);

    private TokenSection[]? _sections;

    /// <summary>The per-token regions of a block (<see cref="TokenSection"/>), or null when tokens share bytes (whole-block
    /// codecs). Together they must cover the block exactly (tests check it).</summary>
    public TokenSection[]? TokenSections => _sections ??= DescribeTokenSections();

    /// <summary>Per-token codecs override this to describe their layout; null = slots cannot be copied one by one.</summary>
    protected virtual TokenSection[]? DescribeTokenSections() => null;

    /// <summary>Whether <see cref="CopySlot"/> works (token policies need it to compact blocks after an eviction).</summary>
    public bool CanCopySlots => !EncodesWholeBlocks && TokenSections != null;

    /// <summary>Copies the encoded token in slot <paramref name="srcSlot"/> of <paramref name="src"/> to slot
    /// <paramref name="dstSlot"/> of <paramref name="dst"/> (the same block or another), bit for bit.</summary>
    public virtual void CopySlot(ReadOnlySpan<byte> src, int srcSlot, Span<byte> dst, int dstSlot)
    {
        var sections = TokenSections;
        if (sections == null || EncodesWholeBlocks)
            throw new KvSpecException($"{Name}: tokens share bytes within a block, so single slots cannot be copied");
        if ((uint)srcSlot >= (uint)BlockTokens || (uint)dstSlot >= (uint)BlockTokens)
            throw new ArgumentOutOfRangeException(nameof(srcSlot), $"{Name}: slots {srcSlot} -> {dstSlot} outside 0..{BlockTokens - 1}");
        foreach (var s in sections)
            src.Slice(s.Offset + srcSlot * s.BytesPerToken, s.BytesPerToken).CopyTo(dst.Slice(s.Offset + dstSlot * s.BytesPerToken, s.BytesPerToken));
    }

    public override string ToString() => $"{Name} ({BitsPerElement:F2} bits/value)";
}
