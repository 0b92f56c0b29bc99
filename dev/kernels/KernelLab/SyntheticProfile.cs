using Kvq.Cache.Codecs.KvQuant;
using Kvq.Calibration.KvQuant;
using Kvq.Cuda;
using Kvq.Cuda.Attention;

namespace Kvq.KernelLab;

/// <summary>
/// A KVQuant calibration for the synthetic source, made the way <c>kvq calibrate</c> makes one (without Fisher
/// weights): a sample of tokens at positions the benchmark never uses, per (head, channel) key percentiles at
/// F/2 and 1 - F/2 (zero, range), 1-D k-means codebooks on the normalized non-outlier keys and on the values
/// normalized per token after <see cref="TokenOutliers"/> removed the token's extremes. With no outlier fraction (the
/// dense formats) the key scales are the sample's min and max and the values keep every channel, as calibrate does
/// for a spec without F%.
/// </summary>
public static class SyntheticProfile
{
    public const long CalibrationPos0 = 1L << 36;

    /// <summary>Profiles for the lab's format names: nuqB (fitted for 1% outliers), nuqBd (dense: no outliers) and nuqBs
    /// (sparse keys: 0.1% key outliers, dense values).</summary>
    public static Dictionary<string, NuqLayerProfile> FitFormats(DecodeKernels kernels, int kvHeads, uint seedK, uint seedV, int tokens = 512)
    {
        var result = new Dictionary<string, NuqLayerProfile>();
        foreach (var (b, p) in Fit(kernels, kvHeads, seedK, seedV, tokens, 0.01)) result[$"nuq{b}"] = p;
        foreach (var (b, p) in Fit(kernels, kvHeads, seedK, seedV, tokens, 0)) result[$"nuq{b}d"] = p;
        // Sparse keys: key scales at the 0.05% / 99.95% percentiles (nuqB-0.1%), values without outliers (nuqB).
        foreach (var (b, p) in Fit(kernels, kvHeads, seedK, seedV, tokens, 0.001, valueFraction: 0)) result[$"nuq{b}s"] = p;
        return result;
    }

    public static Dictionary<int, NuqLayerProfile> Fit(DecodeKernels kernels, int kvHeads, uint seedK, uint seedV, int tokens = 512, double fraction = 0.01, double? valueFraction = null)
    {
        const int d = 128;
        var keys = Materialize(kernels, seedK, kvHeads, CalibrationPos0, tokens);
        var values = Materialize(kernels, seedV, kvHeads, CalibrationPos0, tokens);
        var zero = new float[kvHeads * d];
        var range = new float[kvHeads * d];
        var col = new float[tokens];
        var normK = new List<float>();
        for (int h = 0; h < kvHeads; h++)
            for (int c = 0; c < d; c++)
            {
                for (int t = 0; t < tokens; t++) col[t] = keys[((long)h * tokens + t) * d + c];
                var sorted = (float[])col.Clone();
                Array.Sort(sorted);
                float hi = KvQuantFitter.Percentile(sorted, 1 - fraction / 2), lo = KvQuantFitter.Percentile(sorted, fraction / 2);
                zero[h * d + c] = (hi + lo) / 2;
                range[h * d + c] = Math.Max((hi - lo) / 2, 1e-6f);
                foreach (var x in col)
                {
                    float u = (x - zero[h * d + c]) / range[h * d + c];
                    if (u >= -1 && u <= 1) normK.Add(u);
                }
            }
        var normV = new List<float>();
        var row = new float[d];
        var isOut = new bool[d];
        int perTail = KvQuantSpec.TokenOutliersPerTail(valueFraction ?? fraction, d);
        var idx = new int[Math.Max(1, 2 * perTail)];
        for (long r = 0; r < (long)kvHeads * tokens; r++)
        {
            Array.Copy(values, r * d, row, 0, d);
            var (min, max) = TokenOutliers.Split(row, perTail, isOut, idx);
            float z = (float)(Half)((max + min) * 0.5f), rg = (float)(Half)((max - min) * 0.5f);
            if (!(rg > 0)) continue;
            for (int c = 0; c < d; c++) if (!isOut[c]) normV.Add((row[c] - z) / rg);
        }
        var result = new Dictionary<int, NuqLayerProfile>();
        foreach (int bits in new[] { 2, 3, 4 })
        {
            var kcb = new NuqCodebook(Codebook(normK, bits));
            var vcb = new NuqCodebook(Codebook(normV, bits));
            result[bits] = new NuqLayerProfile(kvHeads, d, zero, range, kcb, vcb);
        }
        return result;
    }

    private static float[] Codebook(List<float> values, int bits)
    {
        // A fixed-stride subsample keeps the fit to a second; the histogram fit is exact for what it is given.
        int stride = Math.Max(1, values.Count / 400_000);
        var x = new float[values.Count / stride];
        for (int i = 0; i < x.Length; i++) x[i] = values[i * stride];
        var w = new float[x.Length];
        Array.Fill(w, 1f);
        return WeightedKMeans1D.Fit(x, w, 1 << bits, seed: 7).Levels;
    }

    /// <summary>The source's raw values [head][token][128] at positions pos0 .. pos0 + tokens - 1.</summary>
    public static float[] Materialize(DecodeKernels kernels, uint seed, int heads, long pos0, long tokens)
    {
        long total = heads * tokens * 128;
        using var buf = kernels.Context.Allocate(total * 4);
        using var a = new KernelArgs();
        a.Add(seed).Add(heads).Add(pos0).Add(tokens).Add(buf);
        kernels.Materialize().Launch(LaunchShape.Grid1((total + 255) / 256, 256), a);
        kernels.Context.Synchronize();
        return buf.Download<float>(total);
    }
}
