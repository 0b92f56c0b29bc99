using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Calibration;
using Kvq.Calibration.LowRank;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.LowRank;

/// <summary>Correlated activations (a few strong directions, as real keys have, plus isotropic noise) and profiles
/// with low-rank bases fitted on them.</summary>
public static class LowRankTestData
{
    /// <summary>(tokens, width) rows: per head of <paramref name="headDim"/>, offset + sum of 6 random directions with
    /// decreasing scales 4, 2, 1, ... + 0.1 noise. The directions depend on <paramref name="structureSeed"/> only, so
    /// calibration and test data of the same structure share them.</summary>
    public static float[] Activations(int tokens, int width, int headDim, int seed, int structureSeed = 0)
    {
        const int strong = 6;
        var srng = new Random(1000 + structureSeed);
        int heads = width / headDim;
        var dirs = new double[heads, strong, headDim];
        var offset = new double[width];
        for (int c = 0; c < width; c++) offset[c] = srng.NextDouble() * 2 - 1;
        for (int h = 0; h < heads; h++)
            for (int s = 0; s < strong; s++)
            {
                double norm = 0;
                for (int c = 0; c < headDim; c++) { dirs[h, s, c] = KvQuantTestData.Gaussian(srng); norm += dirs[h, s, c] * dirs[h, s, c]; }
                for (int c = 0; c < headDim; c++) dirs[h, s, c] /= Math.Sqrt(norm);
            }
        var rng = new Random(seed);
        var x = new float[tokens * width];
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
            {
                var z = new double[strong];
                for (int s = 0; s < strong; s++) z[s] = KvQuantTestData.Gaussian(rng) * 4 / (1 << s);
                for (int c = 0; c < headDim; c++)
                {
                    double v = offset[h * headDim + c] + 0.1 * KvQuantTestData.Gaussian(rng);
                    for (int s = 0; s < strong; s++) v += z[s] * dirs[h, s, c];
                    x[t * width + h * headDim + c] = (float)v;
                }
            }
        return x;
    }

    public static KvActivations ActivationSet(KvShape shape, int tokens, int seed, int structureSeed = 0)
    {
        var keys = new float[shape.Layers][];
        var values = new float[shape.Layers][];
        for (int l = 0; l < shape.Layers; l++)
        {
            keys[l] = Activations(tokens, shape.KvDim, shape.HeadDim, seed + 31 * l, structureSeed + 2 * l);
            values[l] = Activations(tokens, shape.KvDim, shape.HeadDim, seed + 31 * l + 7, structureSeed + 2 * l + 1);
        }
        var positions = Enumerable.Range(1, tokens).ToArray();
        return new KvActivations(shape, positions, keys, values);
    }

    /// <summary>A KVQuant profile (for nuq on the same data) with low-rank bases of <see cref="ActivationSet"/>.</summary>
    /// <param name="latentRanks">Ranks whose key latent also gets a KVQuant calibration (for lrR+nuq*).</param>
    public static KvQuantProfile Profile(KvShape shape, int tokens = 1500, int seed = 1, int[]? latentRanks = null)
    {
        var acts = ActivationSet(shape, tokens, seed);
        var fit = new Kvq.Calibration.KvQuant.KvQuantFitOptions([0.01], Seed: 7, Threads: 1, Bins: 4096, Restarts: 1);
        var cals = Kvq.Calibration.KvQuant.KvQuantFitter.Fit(acts, fit);
        var settings = new KvQuantCalibrationSettings("synthetic-lowrank", new string('0', 64), 1, tokens, 0, 7, false);
        var bases = LowRankFitter.Fit(acts);
        if (latentRanks != null) bases = LatentCalibration.Fit(acts, bases, latentRanks, fit);
        return new KvQuantProfile("test-model", settings, shape.Layers, shape.KvHeads, shape.HeadDim, cals, bases);
    }
}
