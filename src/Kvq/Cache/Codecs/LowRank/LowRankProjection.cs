using System.Numerics.Tensors;

namespace Kvq.Cache.Codecs.LowRank;

/// <summary>
/// x ~ mean + B^T l with l = B (x - mean): B holds <see cref="Rank"/> orthonormal rows of length <see cref="HeadDim"/>
/// (the leading eigenvectors of the calibration covariance). Row-major B makes both directions contiguous SIMD work:
/// projecting is R dot products, reconstructing R scaled row additions.
/// </summary>
public sealed class LowRankProjection
{
    public int HeadDim { get; }
    public int Rank { get; }
    /// <summary>(HeadDim) subtracted before projecting, added back after.</summary>
    public float[] Mean { get; }
    /// <summary>(Rank, HeadDim), row i = i-th principal direction.</summary>
    public float[] Basis { get; }

    public LowRankProjection(float[] mean, float[] basis, int rank)
    {
        int hd = mean.Length;
        if (rank < 1 || rank > hd) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} outside [1, {hd}]");
        if (basis.Length != rank * hd) throw new ArgumentException($"basis has {basis.Length} values, expected {rank} x {hd}");
        HeadDim = hd;
        Rank = rank;
        Mean = mean;
        Basis = basis;
    }

    public ReadOnlySpan<float> Row(int i) => Basis.AsSpan(i * HeadDim, HeadDim);

    /// <summary>latent[i] = B_i . (x - mean). <paramref name="centered"/> is HeadDim scratch.</summary>
    public void Project(ReadOnlySpan<float> x, Span<float> latent, Span<float> centered)
    {
        TensorPrimitives.Subtract(x[..HeadDim], Mean, centered);
        for (int i = 0; i < Rank; i++) latent[i] = TensorPrimitives.Dot(Row(i), centered);
    }

    /// <summary>dst = mean + sum_i latent[i] B_i, rows added in order i = 0..Rank-1 (the reference follows the same order).</summary>
    public void Reconstruct(ReadOnlySpan<float> latent, Span<float> dst)
    {
        Mean.CopyTo(dst);
        for (int i = 0; i < Rank; i++) TensorPrimitives.MultiplyAdd(Row(i), latent[i], dst, dst);
    }

    /// <summary>
    /// Reconstructs <paramref name="count"/> tokens whose latents occupy the first count*Rank floats of
    /// <paramref name="tile"/> into (count, HeadDim) in the same span. Back to front: token j's output covers floats
    /// [j*HeadDim, (j+1)*HeadDim), which only overlap latents of tokens >= j (Rank &lt;= HeadDim), already consumed
    /// except token j's own, copied aside first. So attention needs no second tile.
    /// </summary>
    public void ReconstructInPlace(Span<float> tile, int count)
    {
        Span<float> latent = Rank <= 256 ? stackalloc float[Rank] : new float[Rank];
        for (int j = count - 1; j >= 0; j--)
        {
            tile.Slice(j * Rank, Rank).CopyTo(latent);
            Reconstruct(latent, tile.Slice(j * HeadDim, HeadDim));
        }
    }

    /// <summary>Scalar twin of <see cref="Reconstruct"/>: same operations in the same order, so bit-identical
    /// (TensorPrimitives.MultiplyAdd is an unfused x*y+z per element).</summary>
    public void ReconstructReference(ReadOnlySpan<float> latent, Span<float> dst)
    {
        for (int c = 0; c < HeadDim; c++)
        {
            float o = Mean[c];
            for (int i = 0; i < Rank; i++) o = Basis[i * HeadDim + c] * latent[i] + o;
            dst[c] = o;
        }
    }
}
