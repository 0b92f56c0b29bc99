namespace Kvq.Calibration.LowRank;

/// <summary>
/// Eigen-decomposition of a small dense symmetric matrix by cyclic Jacobi rotations. Written here rather than taken
/// from a package: the one caller decomposes head-dim-sized covariances (64 x 64 for books-19m) a few dozen times per
/// calibration, Jacobi is short, needs no tuning and is accurate to working precision for symmetric matrices,
/// while MathNet.Numerics would bring a large assembly into the core library for this one routine.
/// </summary>
public static class SymmetricEigen
{
    /// <summary>
    /// Eigenvalues (descending) and unit eigenvectors as rows (row i belongs to eigenvalue i) of the symmetric n x n
    /// matrix <paramref name="a"/> (row-major; only its values are read, it is not modified).
    /// </summary>
    public static (double[] Values, double[] Vectors) Decompose(ReadOnlySpan<double> a, int n)
    {
        if (a.Length != n * n) throw new ArgumentException($"expected {n} x {n} values, got {a.Length}");
        var m = a.ToArray();
        for (int i = 0; i < n; i++)
            for (int j = 0; j < i; j++)
                if (Math.Abs(m[i * n + j] - m[j * n + i]) > 1e-9 * (Math.Abs(m[i * n + j]) + Math.Abs(m[j * n + i]) + 1e-300))
                    throw new ArgumentException($"matrix is not symmetric at ({i}, {j})");
        var v = new double[n * n]; // columns = eigenvectors while rotating
        for (int i = 0; i < n; i++) v[i * n + i] = 1;
        double total = 0;
        foreach (var x in m) total += x * x;
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0;
            for (int p = 0; p < n; p++)
                for (int q = p + 1; q < n; q++) off += m[p * n + q] * m[p * n + q];
            if (off <= 1e-30 * total || off == 0) break;
            for (int p = 0; p < n; p++)
                for (int q = p + 1; q < n; q++)
                    Rotate(m, v, n, p, q);
        }
        var order = Enumerable.Range(0, n).OrderByDescending(i => m[i * n + i]).ThenBy(i => i).ToArray();
        var values = new double[n];
        var vectors = new double[n * n];
        for (int k = 0; k < n; k++)
        {
            int i = order[k];
            values[k] = m[i * n + i];
            for (int c = 0; c < n; c++) vectors[k * n + c] = v[c * n + i];
        }
        return (values, vectors);
    }

    /// <summary>One Jacobi rotation zeroing m[p, q] (Golub and Van Loan's symmetric Schur step): m = J^T m J, v = v J.</summary>
    private static void Rotate(double[] m, double[] v, int n, int p, int q)
    {
        double apq = m[p * n + q];
        if (apq == 0) return;
        double app = m[p * n + p], aqq = m[q * n + q];
        double tau = (aqq - app) / (2 * apq);
        // The smaller root of t^2 + 2 tau t - 1 = 0: the rotation angle below pi/4, which keeps the sweeps convergent.
        double t = Math.Sign(tau == 0 ? 1 : tau) / (Math.Abs(tau) + Math.Sqrt(1 + tau * tau));
        double c = 1 / Math.Sqrt(1 + t * t), s = t * c;
        for (int k = 0; k < n; k++)
        {
            double mkp = m[k * n + p], mkq = m[k * n + q];
            m[k * n + p] = c * mkp - s * mkq;
            m[k * n + q] = s * mkp + c * mkq;
        }
        for (int k = 0; k < n; k++)
        {
            double mpk = m[p * n + k], mqk = m[q * n + k];
            m[p * n + k] = c * mpk - s * mqk;
            m[q * n + k] = s * mpk + c * mqk;
        }
        m[p * n + q] = m[q * n + p] = 0;
        for (int k = 0; k < n; k++)
        {
            double vkp = v[k * n + p], vkq = v[k * n + q];
            v[k * n + p] = c * vkp - s * vkq;
            v[k * n + q] = s * vkp + c * vkq;
        }
    }
}
