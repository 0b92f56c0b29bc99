using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

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
        bool wide = Vector512.IsHardwareAccelerated && HeadDim % 16 == 0;
        for (int j = count - 1; j >= 0; j--)
        {
            tile.Slice(j * Rank, Rank).CopyTo(latent);
            if (wide) Reconstruct512(latent, tile.Slice(j * HeadDim, HeadDim));
            else Reconstruct(latent, tile.Slice(j * HeadDim, HeadDim));
        }
    }

    /// <summary><see cref="Reconstruct"/> with the accumulator of each 16-value chunk held in a register across all
    /// R rows: one TensorPrimitives call per row (R x HeadDim/16 vectors, each loaded and stored) made decode at ctx
    /// 2048 spend most of its time in call overhead and memory traffic. Same unfused multiply-then-add per element,
    /// rows in the same order, so still bit-identical to <see cref="ReconstructReference"/>.</summary>
    private void Reconstruct512(ReadOnlySpan<float> latent, Span<float> dst)
    {
        ref float b = ref MemoryMarshal.GetArrayDataReference(Basis);
        ref float m = ref MemoryMarshal.GetArrayDataReference(Mean);
        ref float l = ref MemoryMarshal.GetReference(latent);
        ref float d = ref MemoryMarshal.GetReference(dst);
        int hd = HeadDim, r = Rank;
        for (int v = 0; v < hd; v += 16)
        {
            var acc = Vector512.LoadUnsafe(ref m, (nuint)v);
            for (int i = 0; i < r; i++)
                acc = Vector512.LoadUnsafe(ref b, (nuint)(i * hd + v)) * Vector512.Create(System.Runtime.CompilerServices.Unsafe.Add(ref l, i)) + acc;
            acc.StoreUnsafe(ref d, (nuint)v);
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
