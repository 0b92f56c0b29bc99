using System.Numerics;
using Kvq.Tensors;

namespace Kvq.Calibration.Fisher;

/// <summary>
/// dX += G W for a weight matrix W (rows x cols) in any ggml type: the gradient with respect to the input of y = W x.
/// W is decoded a few rows at a time (no f32 copy of the matrix); work is split into tiles of tokens, each tile
/// reading all of W once and keeping its (tile, cols) slice of dX in cache.
/// </summary>
public static unsafe class TransposedProduct
{
    /// <summary>Tokens per tile: (32, cols) f32 of dX is 128 KiB at cols = 1024.</summary>
    private const int TileTokens = 32;
    /// <summary>Rows of W decoded and applied together (one load/store of dX per 4 rows).</summary>
    private const int RowGroup = 4;

    /// <summary>dx[t, c] += sum_r W[r, c] g[t, r] for t in [0, n): g is (n, Rows), dx is (n, Cols), row-major.</summary>
    public static void AddTo(WeightMatrix w, ReadOnlySpan<float> g, Span<float> dx, int n, Parallelism par)
    {
        if (g.Length < (long)n * w.Rows || dx.Length < (long)n * w.Cols)
            throw new ArgumentException($"{w.Name}: transposed product shapes g {g.Length} dx {dx.Length} vs {n} x ({w.Rows}x{w.Cols})");
        if (n == 0) return;
        fixed (float* pg = g)
        fixed (float* pdx = dx)
        {
            var job = new Job(w, pg, pdx, n);
            par.For((n + TileTokens - 1) / TileTokens, 1, ref job);
        }
    }

    /// <summary>Scalar twin of <see cref="AddTo"/>, sums in double (test oracle).</summary>
    public static void AddToReference(WeightMatrix w, ReadOnlySpan<float> g, Span<float> dx, int n)
    {
        var row = new float[w.Cols];
        var acc = new double[(long)n * w.Cols];
        for (int r = 0; r < w.Rows; r++)
        {
            w.DequantizeRow(r, row);
            for (int t = 0; t < n; t++)
            {
                double gr = g[t * w.Rows + r];
                for (int c = 0; c < w.Cols; c++) acc[(long)t * w.Cols + c] += gr * row[c];
            }
        }
        for (int i = 0; i < acc.Length; i++) dx[i] += (float)acc[i];
    }

    private readonly struct Job(WeightMatrix w, float* g, float* dx, int n) : IRangeJob
    {
        public void Run(int start, int end)
        {
            int rows = w.Rows, cols = w.Cols;
            var scratch = new float[RowGroup * cols];
            for (int tile = start; tile < end; tile++)
            {
                int t0 = tile * TileTokens, t1 = Math.Min(n, t0 + TileTokens);
                for (int r = 0; r < rows; r += RowGroup)
                {
                    int m = Math.Min(RowGroup, rows - r);
                    for (int k = 0; k < m; k++) w.DequantizeRow(r + k, scratch.AsSpan(k * cols, cols));
                    if (m < RowGroup) scratch.AsSpan(m * cols).Clear();
                    fixed (float* ws = scratch)
                    {
                        for (int t = t0; t < t1; t++)
                        {
                            float* gt = g + (long)t * rows + r;
                            float g0 = gt[0], g1 = m > 1 ? gt[1] : 0, g2 = m > 2 ? gt[2] : 0, g3 = m > 3 ? gt[3] : 0;
                            if (g0 == 0 && g1 == 0 && g2 == 0 && g3 == 0) continue;
                            Axpy4(dx + (long)t * cols, ws, cols, g0, g1, g2, g3);
                        }
                    }
                }
            }
        }
    }

    /// <summary>y += g0 w0 + g1 w1 + g2 w2 + g3 w3, the four rows of w stored one after another (stride cols).</summary>
    private static void Axpy4(float* y, float* w, int cols, float g0, float g1, float g2, float g3)
    {
        int i = 0;
        int lanes = Vector<float>.Count;
        var v0 = new Vector<float>(g0);
        var v1 = new Vector<float>(g1);
        var v2 = new Vector<float>(g2);
        var v3 = new Vector<float>(g3);
        float* w0 = w, w1 = w + cols, w2 = w + 2 * cols, w3 = w + 3 * cols;
        for (; i + lanes <= cols; i += lanes)
        {
            var acc = Vector.Load(y + i);
            acc = Vector.FusedMultiplyAdd(Vector.Load(w0 + i), v0, acc);
            acc = Vector.FusedMultiplyAdd(Vector.Load(w1 + i), v1, acc);
            acc = Vector.FusedMultiplyAdd(Vector.Load(w2 + i), v2, acc);
            acc = Vector.FusedMultiplyAdd(Vector.Load(w3 + i), v3, acc);
            acc.Store(y + i);
        }
        for (; i < cols; i++) y[i] += g0 * w0[i] + g1 * w1[i] + g2 * w2[i] + g3 * w3[i];
    }
}
