using System.Buffers;

namespace Kvq.Cache.Codecs.LowRank;

/// <summary>
/// Low-rank storage (Palu-style, arXiv 2407.21118) as a decorator: a vector x of HeadDim values is stored as its
/// latent l = B (x - mean) of <see cref="LowRankProjection.Rank"/> values through an inner codec built with head dim
/// R, and read back as mean + B^T l. Keys are projected before RoPE (the principal directions of pre-RoPE keys are
/// stable across positions, rotated ones are not), so the codec is <see cref="KvCodec.PreRope"/> on the key side and
/// attention rotates the reconstructed keys at their positions (the base class's tile path). Blocks are the inner
/// codec's blocks: R/HeadDim of the bytes plus whatever the inner format adds.
/// </summary>
public sealed class LowRankCodec : KvCodec, IKvCodecReference
{
    private readonly string _name;
    private readonly KvSide _side;

    public LowRankCodec(string name, KvSide side, LowRankProjection projection, KvCodec inner)
        : base(inner.BlockTokens, projection.HeadDim)
    {
        if (inner.HeadDim != projection.Rank)
            throw new ArgumentException($"inner codec has head dim {inner.HeadDim}, the projection rank {projection.Rank}");
        _name = name;
        _side = side;
        Projection = projection;
        Inner = inner;
    }

    public LowRankProjection Projection { get; }
    /// <summary>The latent's codec (head dim = rank).</summary>
    public KvCodec Inner { get; }
    public int Rank => Projection.Rank;

    public override string Name => _name;
    public override KvBytes BlockLayout => Inner.BlockLayout;
    public override bool PreRope => _side == KvSide.Key;
    public override bool EncodesWholeBlocks => Inner.EncodesWholeBlocks;
    public override int ResidualTokens => Inner.ResidualTokens;
    /// <summary>The inner codec's per-token regions: a slot's latent moves as its bytes (token policies).</summary>
    protected override TokenSection[]? DescribeTokenSections() => Inner.TokenSections;

    /// <summary>The inner codec's sparse part (e.g. KVQuant's outliers of the latents), kept beside the block.</summary>
    public override bool HasBlockOutliers => Inner.HasBlockOutliers;
    public override double ExpectedOutlierBytesPerBlock => Inner.ExpectedOutlierBytesPerBlock;
    public override int OutlierRowLength => Inner.OutlierRowLength;

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) => EncodeToken(x, block, null, slot);

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, BlockOutliers? outliers, int slot)
    {
        Span<float> latent = stackalloc float[Rank];
        Span<float> centered = stackalloc float[HeadDim];
        Projection.Project(x, latent, centered);
        Inner.EncodeToken(latent, block, outliers, slot);
    }

    public override void CopySlot(ReadOnlySpan<byte> src, BlockOutliers? srcOutliers, int srcSlot, Span<byte> dst,
        BlockOutliers? dstOutliers, int dstSlot) => Inner.CopySlot(src, srcOutliers, srcSlot, dst, dstOutliers, dstSlot);

    public override void CopySlot(ReadOnlySpan<byte> src, int srcSlot, Span<byte> dst, int dstSlot) =>
        Inner.CopySlot(src, srcSlot, dst, dstSlot);

    public override void EncodeBlock(ReadOnlySpan<float> xs, Span<byte> block) => EncodeBlock(xs, block, null);

    public override void EncodeBlock(ReadOnlySpan<float> xs, Span<byte> block, BlockOutliers? outliers)
    {
        // Whole-block inner codecs (per-channel scaling) see the block's latents together.
        int n = BlockTokens * Rank;
        var latents = ArrayPool<float>.Shared.Rent(n);
        try
        {
            Project(xs, BlockTokens, latents);
            Inner.EncodeBlock(latents.AsSpan(0, n), block, outliers);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(latents);
        }
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) => DecodeBlock(block, null, count, dst);

    public override void DecodeBlock(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst)
    {
        Inner.DecodeBlock(block, outliers, count, dst[..(count * Rank)]);
        Projection.ReconstructInPlace(dst, count);
    }

    /// <summary>Latents of n tokens (n, HeadDim) into (n, Rank), exactly as encoding computes them.</summary>
    private void Project(ReadOnlySpan<float> xs, int n, Span<float> latents)
    {
        Span<float> centered = stackalloc float[HeadDim];
        for (int t = 0; t < n; t++) Projection.Project(xs.Slice(t * HeadDim, HeadDim), latents.Slice(t * Rank, Rank), centered);
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst) => DecodeBlockReference(block, null, count, dst);

    public void DecodeBlockReference(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst)
    {
        var latents = new float[count * Rank];
        if (Inner is IKvCodecReference r) r.DecodeBlockReference(block, outliers, count, latents);
        else Inner.DecodeBlock(block, outliers, count, latents);
        for (int t = 0; t < count; t++)
            Projection.ReconstructReference(latents.AsSpan(t * Rank, Rank), dst.Slice(t * HeadDim, HeadDim));
    }

    /// <summary>
    /// Per value c of a token: with l the exact latent (f64) and l~ the float one the inner codec is given,
    /// x_c = mean_c + sum_i B_ic l_i + res_c, so the decoded value differs from x_c by at most
    /// |res_c| (what the rank leaves out) + sum_i |B_ic| (b_i + |l~_i - l_i|) (the inner codec's bound b on l~, and the
    /// projection's float rounding) + the reconstruction's own float rounding, (R+1) 2^-23 (|mean_c| + sum_i |B_ic| (|l~_i| + b_i)).
    /// </summary>
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound)
    {
        int n = xs.Length / HeadDim, hd = HeadDim, r = Rank;
        var latents = new float[n * r];
        Project(xs, n, latents);
        var inner = new float[n * r];
        if (Inner is IKvCodecReference ir) ir.MaxAbsError(latents, inner);
        else FloatBound(Inner.Name, latents, inner);
        var b = Projection.Basis;
        var mean = Projection.Mean;
        var exact = new double[r];
        double gamma = (r + 1) * Math.Pow(2, -23);
        for (int t = 0; t < n; t++)
        {
            var x = xs.Slice(t * hd, hd);
            for (int i = 0; i < r; i++)
            {
                double d = 0;
                for (int c = 0; c < hd; c++) d += (double)b[i * hd + c] * ((double)x[c] - mean[c]);
                exact[i] = d;
            }
            for (int c = 0; c < hd; c++)
            {
                double rec = mean[c], spread = 0, magnitude = Math.Abs(mean[c]);
                for (int i = 0; i < r; i++)
                {
                    double bic = b[i * hd + c], lt = latents[t * r + i], bi = inner[t * r + i];
                    rec += bic * exact[i];
                    spread += Math.Abs(bic) * (bi + Math.Abs(lt - exact[i]));
                    magnitude += Math.Abs(bic) * (Math.Abs(lt) + bi);
                }
                double residual = Math.Abs(x[c] - rec);
                bound[t * hd + c] = (float)((residual + spread + gamma * magnitude) * (1 + 1e-6) + 1e-30);
            }
        }
    }

    /// <summary>The float formats carry no bound of their own: half an ulp relative (f16 2^-11, bf16 2^-8) plus f16's
    /// subnormal spacing; f32 is exact.</summary>
    private static void FloatBound(string name, ReadOnlySpan<float> xs, Span<float> bound)
    {
        float rel = name switch { "f32" => 0f, "f16" => 1f / 2048, "bf16" => 1f / 256, _ => float.NaN };
        if (float.IsNaN(rel)) throw new NotSupportedException($"latent format {name} has no error bound (implement IKvCodecReference)");
        float abs = name == "f16" ? 1f / (1 << 25) : 0f;
        for (int i = 0; i < xs.Length; i++) bound[i] = MathF.Abs(xs[i]) * rel + abs;
    }
}
