using System.Buffers;
using Kvq.Tensors;

namespace Kvq.Cache.Codecs.Rotation;

/// <summary>
/// A codec behind a rotation R = H D / sqrt(n) per run of n = <see cref="Hadamard.BlockSize"/>(HeadDim) channels (H the
/// Walsh-Hadamard matrix, D optional random signs): vectors are stored as the inner codec's encoding of R x and read
/// back as R^T decode. The rotation spreads an outlier channel over all n channels, so per-group scales fit the bulk of
/// the values (llama.cpp's default for quantized caches since PR #21038, D = I; TurboQuant's random rotation with D).
/// Post-RoPE codecs fold the rotation into attention: scores rotate the query instead of each key (q . R^T k~ =
/// (R q) . k~), and values are accumulated in the rotated basis, then un-rotated once per call. Pre-RoPE inner
/// codecs (KVQuant keys) must un-rotate before RoPE, so they take the base class's tile path through
/// <see cref="DecodeBlock"/>. Blocks are the inner codec's: the rotation costs no bytes.
/// </summary>
public sealed class RotatedCodec : KvCodec, IKvCodecReference
{
    private readonly string _name;
    private readonly float[]? _signs; // D's diagonal (+-1 per channel), or null for D = I
    private readonly int _n;          // transform size

    public RotatedCodec(string name, KvCodec inner, float[]? signs = null) : base(inner.BlockTokens, inner.HeadDim)
    {
        if (signs != null && signs.Length != inner.HeadDim)
            throw new ArgumentException($"{signs.Length} signs for head dim {inner.HeadDim}");
        _name = name;
        _signs = signs;
        _n = Hadamard.BlockSize(inner.HeadDim);
        Inner = inner;
    }

    /// <summary>The codec of the rotated vectors.</summary>
    public KvCodec Inner { get; }

    public override string Name => _name;
    public override KvBytes BlockLayout => Inner.BlockLayout;
    public override bool PreRope => Inner.PreRope;
    public override bool EncodesWholeBlocks => Inner.EncodesWholeBlocks;
    public override int ResidualTokens => Inner.ResidualTokens;
    protected override TokenSection[]? DescribeTokenSections() => Inner.TokenSections;
    // The inner codec's sparse part (KVQuant's outliers) holds rotated values like its dense codes: every overload below
    // hands it through, and the rotation is undone after both are read.
    public override bool HasBlockOutliers => Inner.HasBlockOutliers;
    public override double ExpectedOutlierBytesPerBlock => Inner.ExpectedOutlierBytesPerBlock;
    public override int OutlierRowLength => Inner.OutlierRowLength;

    /// <summary>y = R x for each of the n-value rows of <paramref name="x"/>, in place.</summary>
    public void Rotate(Span<float> x)
    {
        if (_signs != null) MultiplyRows(x, _signs);
        Hadamard.Transform(x, _n);
    }

    /// <summary>x = R^T y for each row, in place.</summary>
    public void Unrotate(Span<float> y)
    {
        Hadamard.Transform(y, _n);
        if (_signs != null) MultiplyRows(y, _signs);
    }

    private void MultiplyRows(Span<float> x, float[] signs)
    {
        for (int r = 0; r < x.Length; r += HeadDim)
            System.Numerics.Tensors.TensorPrimitives.Multiply(x.Slice(r, HeadDim), signs, x.Slice(r, HeadDim));
    }

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot)
    {
        Span<float> y = HeadDim <= 1024 ? stackalloc float[HeadDim] : new float[HeadDim];
        x[..HeadDim].CopyTo(y);
        Rotate(y);
        Inner.EncodeToken(y, block, slot);
    }

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, BlockOutliers? outliers, int slot)
    {
        Span<float> y = HeadDim <= 1024 ? stackalloc float[HeadDim] : new float[HeadDim];
        x[..HeadDim].CopyTo(y);
        Rotate(y);
        Inner.EncodeToken(y, block, outliers, slot);
    }

    public override void EncodeBlock(ReadOnlySpan<float> xs, Span<byte> block) => EncodeBlock(xs, block, null);

    public override void EncodeBlock(ReadOnlySpan<float> xs, Span<byte> block, BlockOutliers? outliers)
    {
        int n = BlockTokens * HeadDim;
        var ys = ArrayPool<float>.Shared.Rent(n);
        try
        {
            xs[..n].CopyTo(ys);
            Rotate(ys.AsSpan(0, n));
            if (outliers != null) Inner.EncodeBlock(ys.AsSpan(0, n), block, outliers);
            else Inner.EncodeBlock(ys.AsSpan(0, n), block);
        }
        finally { ArrayPool<float>.Shared.Return(ys); }
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        Inner.DecodeBlock(block, count, dst);
        Unrotate(dst[..(count * HeadDim)]);
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst)
    {
        Inner.DecodeBlock(block, outliers, count, dst);
        Unrotate(dst[..(count * HeadDim)]);
    }

    public override void CopySlot(ReadOnlySpan<byte> src, BlockOutliers? srcOutliers, int srcSlot, Span<byte> dst,
        BlockOutliers? dstOutliers, int dstSlot) => Inner.CopySlot(src, srcOutliers, srcSlot, dst, dstOutliers, dstSlot);

    public override void Scores(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile) =>
        ScoresRotated(block, null, sparse: false, count, q, nq, scores, tile);

    // With a sparse part (KVQuant values behind the rotation, `nuqB:rot`) the same folding holds: the inner codec's
    // fused kernels (NuqKernels: codebook lookups plus the outliers' corrections) work in the rotated basis, and the
    // rotation is applied once to the query or undone once on the accumulated output, not per token.
    public override void Scores(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, ReadOnlySpan<float> q, int nq,
        Span<float> scores, Span<float> tile) => ScoresRotated(block, outliers, sparse: HasBlockOutliers, count, q, nq, scores, tile);

    public override void Accumulate(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile) =>
        AccumulateRotated(block, null, sparse: false, count, w, nq, acc, tile);

    public override void Accumulate(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, ReadOnlySpan<float> w, int nq,
        Span<float> acc, Span<float> tile) => AccumulateRotated(block, outliers, sparse: HasBlockOutliers, count, w, nq, acc, tile);

    /// <summary>The inner codec's scores against the rotated queries (its outlier overload when <paramref name="sparse"/>).</summary>
    private void ScoresRotated(ReadOnlySpan<byte> block, BlockOutliers? outliers, bool sparse, int count, ReadOnlySpan<float> q, int nq,
        Span<float> scores, Span<float> tile)
    {
        int n = nq * HeadDim;
        float[]? rented = n > 4096 ? ArrayPool<float>.Shared.Rent(n) : null;
        Span<float> rq = rented != null ? rented.AsSpan(0, n) : stackalloc float[n];
        try
        {
            q[..n].CopyTo(rq);
            Rotate(rq);
            if (sparse) Inner.Scores(block, outliers, count, rq, nq, scores, tile);
            else Inner.Scores(block, count, rq, nq, scores, tile);
        }
        finally { if (rented != null) ArrayPool<float>.Shared.Return(rented); }
    }

    /// <summary>The inner codec's weighted values in the rotated basis, unrotated once and added to <paramref name="acc"/>.</summary>
    private void AccumulateRotated(ReadOnlySpan<byte> block, BlockOutliers? outliers, bool sparse, int count, ReadOnlySpan<float> w, int nq,
        Span<float> acc, Span<float> tile)
    {
        int n = nq * HeadDim;
        float[]? rented = n > 4096 ? ArrayPool<float>.Shared.Rent(n) : null;
        Span<float> racc = rented != null ? rented.AsSpan(0, n) : stackalloc float[n];
        try
        {
            racc.Clear();
            if (sparse) Inner.Accumulate(block, outliers, count, w, nq, racc, tile);
            else Inner.Accumulate(block, count, w, nq, racc, tile);
            Unrotate(racc);
            System.Numerics.Tensors.TensorPrimitives.Add(acc[..n], racc, acc[..n]);
        }
        finally { if (rented != null) ArrayPool<float>.Shared.Return(rented); }
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst) => DecodeBlockReference(block, null, count, dst);

    public void DecodeBlockReference(ReadOnlySpan<byte> block, BlockOutliers? outliers, int count, Span<float> dst)
    {
        if (Inner is IKvCodecReference r) r.DecodeBlockReference(block, outliers, count, dst);
        else Inner.DecodeBlock(block, outliers, count, dst);
        var d = dst[..(count * HeadDim)];
        Hadamard.TransformReference(d, _n);
        if (_signs != null)
            for (int i = 0; i < d.Length; i++) d[i] *= _signs[i % HeadDim];
    }

    /// <summary>
    /// With b' the inner codec's bound on each rotated value, an error e' of the rotated run becomes R^T e', whose
    /// entries are +-e'_i / sqrt(n) summed: |e_j| &lt;= sum_i b'_i / sqrt(n) over j's run (a worst case over signs that
    /// real errors, summing with random signs, stay well below: about sqrt(n) times below for equal b'). Plus the
    /// rounding of both transforms: each of the log2(n) + 1 steps rounds values up to sum |x| (unnormalised), and a
    /// later stage can double an earlier error, so at most (n + log2(n) + 1) 2^-24 sum |x| / sqrt(n) per transform.
    /// </summary>
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound)
    {
        var ys = xs.ToArray();
        Rotate(ys);
        var inner = new float[ys.Length];
        if (Inner is IKvCodecReference r) r.MaxAbsError(ys, inner);
        else FloatBound(Inner.Name, ys, inner);
        int steps = _n + System.Numerics.BitOperations.Log2((uint)_n) + 1;
        double rootN = Math.Sqrt(_n);
        for (int start = 0; start < xs.Length; start += _n)
        {
            double sum = 0, mag = 0;
            for (int i = start; i < start + _n; i++)
            {
                sum += inner[i];
                mag += Math.Abs(xs[i]) + Math.Abs(ys[i]) + inner[i];
            }
            float b = (float)((sum / rootN + steps * mag / rootN * Math.Pow(2, -24)) * (1 + 1e-6));
            for (int i = start; i < start + _n; i++) bound[i] = b;
        }
    }

    /// <summary>Float inner formats (f32/f16/bf16) carry no bound: half an ulp relative plus f16's subnormal spacing.</summary>
    private static void FloatBound(string name, ReadOnlySpan<float> xs, Span<float> bound)
    {
        float rel = name switch { "f32" => 0f, "f16" => 1f / 2048, "bf16" => 1f / 256, _ => float.NaN };
        if (float.IsNaN(rel)) throw new NotSupportedException($"inner format {name} has no error bound (implement IKvCodecReference)");
        float abs = name == "f16" ? 1f / (1 << 25) : 0f;
        for (int i = 0; i < xs.Length; i++) bound[i] = MathF.Abs(xs[i]) * rel + abs;
    }
}
