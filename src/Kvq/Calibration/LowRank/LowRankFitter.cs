using Kvq.Cache.Codecs.LowRank;

namespace Kvq.Calibration.LowRank;

/// <summary>
/// Fits <see cref="LowRankBases"/> on calibration activations: per (side, layer, KV head), the mean and covariance of
/// the vectors (pre-RoPE keys, values; the sink positions the source left out stay out) in f64, then all
/// eigenvectors. Centred PCA minimises the mean squared reconstruction error of x ~ mean + B^T B (x - mean) over
/// the calibration vectors for every rank at once; unweighted, since the covariance of raw keys is what Palu's SVD
/// of calibration keys fits too (Fisher weights are per element and would not give one basis).
/// </summary>
public static class LowRankFitter
{
    public static LowRankBases Fit(KvActivations acts, int threads = 1, CancellationToken cancel = default)
    {
        var shape = acts.Shape;
        int layers = shape.Layers, heads = shape.KvHeads, hd = shape.HeadDim;
        var keys = new LowRankBasis[layers * heads];
        var values = new LowRankBasis[layers * heads];
        var options = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, threads), CancellationToken = cancel };
        Parallel.For(0, layers * heads * 2, options, job =>
        {
            int lh = job >> 1, layer = lh / heads, head = lh % heads;
            bool key = (job & 1) == 0;
            var basis = FitOne(key ? acts.Keys[layer] : acts.Values[layer], acts.Tokens, shape.KvDim, head * hd, hd);
            (key ? keys : values)[lh] = basis;
        });
        return new LowRankBases(layers, heads, hd, acts.Tokens, keys, values);
    }

    /// <summary>The basis of the hd values at <paramref name="offset"/> of each of n rows of width <paramref name="stride"/>.</summary>
    public static LowRankBasis FitOne(ReadOnlySpan<float> rows, int n, int stride, int offset, int hd)
    {
        if (n < 1) throw new ArgumentException("no calibration vectors");
        var mean = new double[hd];
        for (int t = 0; t < n; t++)
        {
            var x = rows.Slice(t * stride + offset, hd);
            for (int c = 0; c < hd; c++) mean[c] += x[c];
        }
        for (int c = 0; c < hd; c++) mean[c] /= n;
        // Upper triangle of sum (x - mean)(x - mean)^T, mirrored after.
        var cov = new double[hd * hd];
        var d = new double[hd];
        for (int t = 0; t < n; t++)
        {
            var x = rows.Slice(t * stride + offset, hd);
            for (int c = 0; c < hd; c++) d[c] = x[c] - mean[c];
            for (int i = 0; i < hd; i++)
            {
                double di = d[i];
                int row = i * hd;
                for (int j = i; j < hd; j++) cov[row + j] += di * d[j];
            }
        }
        for (int i = 0; i < hd; i++)
            for (int j = i; j < hd; j++) cov[j * hd + i] = cov[i * hd + j] /= n;
        var (vals, vecs) = SymmetricEigen.Decompose(cov, hd);
        var eig = new float[hd];
        for (int i = 0; i < hd; i++) eig[i] = (float)Math.Max(0, vals[i]); // round-off can leave -1e-17 on a singular covariance
        for (int i = 1; i < hd; i++) eig[i] = Math.Min(eig[i], eig[i - 1]); // float rounding must not break the order
        return new LowRankBasis(Array.ConvertAll(mean, m => (float)m), eig, Normalized(vecs, hd));
    }

    /// <summary>Rows rounded to float and renormalised, so stored rows are unit length to float accuracy.</summary>
    private static float[] Normalized(double[] vecs, int hd)
    {
        var f = new float[hd * hd];
        for (int i = 0; i < hd; i++)
        {
            double norm = 0;
            for (int c = 0; c < hd; c++) norm += vecs[i * hd + c] * vecs[i * hd + c];
            norm = Math.Sqrt(norm);
            for (int c = 0; c < hd; c++) f[i * hd + c] = (float)(vecs[i * hd + c] / norm);
        }
        return f;
    }
}
