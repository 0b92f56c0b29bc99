using Kvq.Cache;

namespace Kvq.Tests.Cache;

/// <summary>The plain reference the cache's attention is checked against.</summary>
internal static class ReferenceAttention
{
    /// <summary>Every output within 1e-4 of the reference, relative to the largest reference output (at least 1).</summary>
    public static void AssertClose(float[] got, double[] expected)
    {
        double maxDiff = 0, maxAbs = 0;
        for (int i = 0; i < got.Length; i++)
        {
            maxDiff = Math.Max(maxDiff, Math.Abs(got[i] - expected[i]));
            maxAbs = Math.Max(maxAbs, Math.Abs(expected[i]));
        }
        Assert.True(maxDiff <= 1e-4 * Math.Max(1, maxAbs), $"max |diff| {maxDiff} (max |out| {maxAbs})");
    }

    /// <summary>Causal GQA attention in f64 over keys already rotated, queries as given; q (n, QDim), k and v (n, KvDim).</summary>
    public static double[] CausalGqa(KvShape shape, float[] q, float[] k, float[] v, int n)
    {
        int d = shape.HeadDim, g = shape.GroupSize;
        var o = new double[n * shape.QDim];
        var w = new double[n];
        for (int t = 0; t < n; t++)
            for (int hq = 0; hq < shape.Heads; hq++)
            {
                int hk = hq / g;
                double max = double.NegativeInfinity;
                for (int s = 0; s <= t; s++)
                {
                    double dot = 0;
                    for (int c = 0; c < d; c++) dot += (double)q[t * shape.QDim + hq * d + c] * k[s * shape.KvDim + hk * d + c];
                    w[s] = dot / Math.Sqrt(d);
                    max = Math.Max(max, w[s]);
                }
                double sum = 0;
                for (int s = 0; s <= t; s++) { w[s] = Math.Exp(w[s] - max); sum += w[s]; }
                for (int s = 0; s <= t; s++)
                    for (int c = 0; c < d; c++) o[t * shape.QDim + hq * d + c] += w[s] / sum * v[s * shape.KvDim + hk * d + c];
            }
        return o;
    }
}
