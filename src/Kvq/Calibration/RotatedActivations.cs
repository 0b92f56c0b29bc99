using Kvq.Tensors;

namespace Kvq.Calibration;

/// <summary>
/// Calibration activations seen through the Walsh-Hadamard rotation of <c>FORMAT:rot</c>
/// (<see cref="Cache.Codecs.Rotation.RotatedCodec"/>): each KV head's keys (pre-RoPE) and values rotated over the head
/// dim, so that KVQuant's per-channel scales, codebooks and outlier thresholds are fitted to the channels the rotated
/// codec stores. Fisher weights are per element squared gradients; a rotated coordinate's gradient is the rotated
/// gradient, whose squares are not known from the squares alone, so each rotated coordinate gets the mean weight of its
/// token's run (the rotation keeps the sum of squared gradients over the run).
/// </summary>
public static class RotatedActivations
{
    public static KvActivations Rotate(KvActivations acts)
    {
        var shape = acts.Shape;
        int hd = shape.HeadDim, n = Hadamard.BlockSize(hd), layers = shape.Layers;
        var keys = new float[layers][];
        var values = new float[layers][];
        float[][]? kw = acts.KeyWeights == null ? null : new float[layers][];
        float[][]? vw = acts.ValueWeights == null ? null : new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            keys[l] = (float[])acts.Keys[l].Clone();
            values[l] = (float[])acts.Values[l].Clone();
            Hadamard.Transform(keys[l], n);
            Hadamard.Transform(values[l], n);
            if (kw != null) kw[l] = RunMeans(acts.KeyWeights![l], n);
            if (vw != null) vw[l] = RunMeans(acts.ValueWeights![l], n);
        }
        return new KvActivations(shape, acts.Positions, keys, values, kw, vw);
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
