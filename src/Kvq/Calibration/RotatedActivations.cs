using Kvq.Calibration.Fisher;
using Kvq.Tensors;

namespace Kvq.Calibration;

/// <summary>
/// Calibration activations seen through the Walsh-Hadamard rotation of <c>FORMAT:rot</c>
/// (<see cref="Cache.Codecs.Rotation.RotatedCodec"/>): each KV head's keys (pre-RoPE) and values rotated over the head
/// dim, so that KVQuant's per-channel scales, codebooks and outlier thresholds are fitted to the channels the rotated
/// codec stores.
/// <para>Fisher weights must be those of the rotated coordinates. The transform H is orthonormal and symmetric, so for
/// k' = H k the gradient is dL/dk' = H dL/dk: <see cref="RotateWindow"/> rotates each window's signed gradients before
/// they are squared (what <see cref="FisherActivationSource"/> does when asked to rotate). Activations that carry only
/// squared gradients (<see cref="Rotate"/>) cannot be rotated exactly; each rotated coordinate then gets the mean weight
/// of its token's run (the rotation keeps the sum of squared gradients over the run).</para>
/// </summary>
public static class RotatedActivations
{
    /// <summary>Rotates the given sides of activations that hold squared gradients at most (run-mean weights).</summary>
    public static KvActivations Rotate(KvActivations acts, KvRotationSides sides = KvRotationSides.Both)
    {
        var shape = acts.Shape;
        int n = Hadamard.BlockSize(shape.HeadDim), layers = shape.Layers;
        bool rk = sides.HasFlag(KvRotationSides.Keys), rv = sides.HasFlag(KvRotationSides.Values);
        var keys = new float[layers][];
        var values = new float[layers][];
        float[][]? kw = acts.KeyWeights == null ? null : new float[layers][];
        float[][]? vw = acts.ValueWeights == null ? null : new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            keys[l] = rk ? Rotated(acts.Keys[l], n) : acts.Keys[l];
            values[l] = rv ? Rotated(acts.Values[l], n) : acts.Values[l];
            if (kw != null) kw[l] = rk ? RunMeans(acts.KeyWeights![l], n) : acts.KeyWeights![l];
            if (vw != null) vw[l] = rv ? RunMeans(acts.ValueWeights![l], n) : acts.ValueWeights![l];
        }
        return new KvActivations(shape, acts.Positions, keys, values, kw, vw);
    }

    /// <summary>Rotates one window's keys and values of the given sides and their gradients, in place, exactly (the
    /// gradient of the loss with respect to the rotated coordinates).</summary>
    public static void RotateWindow(KvGradients window, int headDim, KvRotationSides sides)
    {
        int n = Hadamard.BlockSize(headDim);
        if (window.KvDim % headDim != 0)
            throw new ArgumentException($"kv width {window.KvDim} is not a multiple of the head dim {headDim}", nameof(headDim));
        foreach (var g in window.Layers)
        {
            if (sides.HasFlag(KvRotationSides.Keys))
            {
                Hadamard.Transform(g.Keys, n);
                Hadamard.Transform(g.KeyGradients, n);
            }
            if (sides.HasFlag(KvRotationSides.Values))
            {
                Hadamard.Transform(g.Values, n);
                Hadamard.Transform(g.ValueGradients, n);
            }
        }
    }

    private static float[] Rotated(float[] x, int n)
    {
        var r = (float[])x.Clone();
        Hadamard.Transform(r, n);
        return r;
    }

    private static float[] RunMeans(float[] w, int n)
    {
        var m = new float[w.Length];
        for (int s = 0; s < w.Length; s += n)
        {
            double sum = 0;
            for (int i = s; i < s + n; i++) sum += w[i];
            m.AsSpan(s, n).Fill((float)(sum / n));
        }
        return m;
    }
}
