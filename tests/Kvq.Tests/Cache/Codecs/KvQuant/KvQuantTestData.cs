using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Calibration;
using Kvq.Calibration.KvQuant;
using Kvq.Tensors;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>Random activations shaped like real keys/values (per-channel offsets and spreads, some single-signed
/// channels, heavy tails) and profiles fitted on them.</summary>
public static class KvQuantTestData
{
    public static KvShape Shape(int layers, int kvHeads, int headDim, int groupSize = 3) =>
        new(layers, kvHeads, kvHeads * groupSize, headDim, new Rope(headDim, headDim, 10000f, 1f, RopeStyle.Normal));

    /// <summary>(tokens, kvHeads*headDim) values: channel c ~ offset_c + spread_c * t-ish noise; never exactly zero.</summary>
    public static float[] Activations(int tokens, int width, int seed)
    {
        var rng = new Random(seed);
        var offset = new float[width];
        var spread = new float[width];
        for (int c = 0; c < width; c++)
        {
            offset[c] = c % 7 == 0 ? 3f + (float)rng.NextDouble() * 2 : (float)(rng.NextDouble() - 0.5);  // some single-signed
            spread[c] = 0.2f + (float)rng.NextDouble() * (c % 5 == 0 ? 4f : 1f);
        }
        var x = new float[tokens * width];
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < width; c++)
            {
                double g = Gaussian(rng);
                if (rng.NextDouble() < 0.01) g *= 6; // heavy tail
                float v = offset[c] + spread[c] * (float)g;
                x[t * width + c] = v == 0 ? 1e-3f : v;
            }
        return x;
    }

    public static double Gaussian(Random rng)
    {
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    public static KvActivations ActivationSet(KvShape shape, int tokens, int seed, bool weighted = false)
    {
        var keys = new float[shape.Layers][];
        var values = new float[shape.Layers][];
        float[][]? kw = weighted ? new float[shape.Layers][] : null;
        float[][]? vw = weighted ? new float[shape.Layers][] : null;
        var rng = new Random(seed + 1000);
        for (int l = 0; l < shape.Layers; l++)
        {
            keys[l] = Activations(tokens, shape.KvDim, seed + 17 * l);
            values[l] = Activations(tokens, shape.KvDim, seed + 17 * l + 5);
            if (weighted)
            {
                kw![l] = new float[tokens * shape.KvDim];
                vw![l] = new float[tokens * shape.KvDim];
                for (int i = 0; i < kw[l].Length; i++)
                {
                    kw[l][i] = (float)Math.Exp(3 * Gaussian(rng)) * 1e-6f;
                    vw[l][i] = (float)Math.Exp(3 * Gaussian(rng)) * 1e-6f;
                }
            }
        }
        var positions = new int[tokens];
        for (int t = 0; t < tokens; t++) positions[t] = 1 + t % 511;
        return new KvActivations(shape, positions, keys, values, kw, vw);
    }

    public static KvQuantProfile Profile(KvShape shape, int tokens = 2000, int seed = 1, double fraction = 0.01, bool weighted = false)
    {
        var acts = ActivationSet(shape, tokens, seed, weighted);
        var cals = KvQuantFitter.Fit(acts, new KvQuantFitOptions([fraction], Seed: 7, Threads: 1, Bins: 4096, Restarts: 1));
        var settings = new KvQuantCalibrationSettings("synthetic", new string('0', 64), 1, tokens, 1, 7, weighted);
        return new KvQuantProfile("test-model", settings, shape.Layers, shape.KvHeads, shape.HeadDim, cals);
    }
}
