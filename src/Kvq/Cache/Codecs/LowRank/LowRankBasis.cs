namespace Kvq.Cache.Codecs.LowRank;

/// <summary>
/// The full principal basis of one (side, layer, KV head): the calibration mean and all HeadDim eigenvectors of the
/// covariance, ordered by decreasing eigenvalue. Storing all of them lets the rank be chosen at inference time: rank R
/// uses the first R rows.
/// </summary>
public sealed class LowRankBasis
{
    public int HeadDim { get; }
    public float[] Mean { get; }
    /// <summary>(HeadDim): variance along each direction, non-increasing, >= 0.</summary>
    public float[] Eigenvalues { get; }
    /// <summary>(HeadDim, HeadDim), row i = unit eigenvector i.</summary>
    public float[] Vectors { get; }

    public LowRankBasis(float[] mean, float[] eigenvalues, float[] vectors)
    {
        int hd = mean.Length;
        if (hd == 0) throw new ArgumentException("empty basis");
        if (eigenvalues.Length != hd || vectors.Length != hd * hd)
            throw new ArgumentException($"basis of head dim {hd} needs {hd} eigenvalues and {hd * hd} vector values, got {eigenvalues.Length} and {vectors.Length}");
        for (int i = 0; i < hd; i++)
        {
            if (!(eigenvalues[i] >= 0)) throw new ArgumentException($"eigenvalue {i} is {eigenvalues[i]}, expected >= 0");
            if (i > 0 && eigenvalues[i] > eigenvalues[i - 1]) throw new ArgumentException($"eigenvalue {i} ({eigenvalues[i]}) exceeds eigenvalue {i - 1} ({eigenvalues[i - 1]})");
        }
        // Orthonormal rows (to float storage accuracy): the codec's error analysis and the in-place inverse rely on it.
        for (int i = 0; i < hd; i++)
            for (int j = i; j < hd; j++)
            {
                double d = 0;
                for (int c = 0; c < hd; c++) d += (double)vectors[i * hd + c] * vectors[j * hd + c];
                if (Math.Abs(d - (i == j ? 1 : 0)) > 1e-4)
                    throw new ArgumentException($"eigenvectors {i} and {j} are not orthonormal (dot {d})");
            }
        HeadDim = hd;
        Mean = mean;
        Eigenvalues = eigenvalues;
        Vectors = vectors;
    }

    /// <summary>The projection onto the first <paramref name="rank"/> directions; with <paramref name="hadamard"/>, onto
    /// the same subspace in the basis H B / sqrt(R) (H the Sylvester Hadamard matrix of order R, a power of two):
    /// still orthonormal, so reconstruction is unchanged up to rounding, but every latent channel gets the same share
    /// of the variance.</summary>
    public LowRankProjection Projection(int rank, bool hadamard = false)
    {
        var rows = Vectors.AsSpan(0, rank * HeadDim).ToArray();
        if (!hadamard) return new(Mean, rows, rank);
        if (rank < 1 || (rank & (rank - 1)) != 0) throw new ArgumentException($"a Hadamard rotation needs a power-of-two rank, not {rank}");
        var rotated = new float[rows.Length];
        double norm = 1 / Math.Sqrt(rank);
        for (int i = 0; i < rank; i++)
            for (int c = 0; c < HeadDim; c++)
            {
                double sum = 0;
                // Sylvester's H[i, j] = (-1)^popcount(i & j).
                for (int j = 0; j < rank; j++) sum += ((System.Numerics.BitOperations.PopCount((uint)(i & j)) & 1) == 0 ? 1 : -1) * (double)rows[j * HeadDim + c];
                rotated[i * HeadDim + c] = (float)(sum * norm);
            }
        return new(Mean, rotated, rank);
    }

    /// <summary>Share of the variance the first <paramref name="rank"/> directions keep (1 at full rank).</summary>
    public double Energy(int rank)
    {
        double kept = 0, total = 0;
        for (int i = 0; i < HeadDim; i++)
        {
            total += Eigenvalues[i];
            if (i < rank) kept += Eigenvalues[i];
        }
        return total == 0 ? 1 : kept / total;
    }
}
