namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// The 2^B levels of a non-uniform datatype on the normalized range [-1, 1] (sorted ascending), with Q-Norm's
/// decode-time correction: a value encodes to its nearest level (ties to the lower one) and decodes to
/// level * NormScale + NormOffset when Q-Norm is on.
/// </summary>
public sealed class NuqCodebook
{
    public float[] Levels { get; }
    /// <summary>Q-Norm: std(original) / std(quantized) over the calibration values.</summary>
    public float NormScale { get; }
    /// <summary>Q-Norm: mean(original) - mean(quantized) * NormScale.</summary>
    public float NormOffset { get; }
    /// <summary>Decision thresholds between neighbouring levels (Levels.Length - 1).</summary>
    public float[] Midpoints { get; }

    public int Bits { get; }

    /// <summary>The error this codebook leaves on its calibration data: sum of weight x (value - level)^2 in the
    /// original units (Fisher-weighted: KVQuant's estimate of the loss increase). NaN when unknown (older profiles,
    /// uniform levels). Drives the per-layer bit allocation of <c>:mixed</c> specs.</summary>
    public double Sensitivity { get; }

    public NuqCodebook(float[] levels, float normScale = 1f, float normOffset = 0f, double sensitivity = double.NaN)
    {
        int n = levels.Length;
        if (n < 2 || (n & (n - 1)) != 0 || n > 256) throw new ArgumentException($"a codebook needs 2^B levels (got {n})");
        for (int i = 0; i < n; i++)
        {
            if (!float.IsFinite(levels[i])) throw new ArgumentException($"codebook level {i} is {levels[i]}");
            if (i > 0 && !(levels[i] > levels[i - 1])) throw new ArgumentException($"codebook levels must increase strictly (level {i}: {levels[i]} after {levels[i - 1]})");
        }
        if (!float.IsFinite(normScale) || !float.IsFinite(normOffset)) throw new ArgumentException("Q-Norm scale and offset must be finite");
        if (!double.IsNaN(sensitivity) && !(sensitivity >= 0 && double.IsFinite(sensitivity)))
            throw new ArgumentException($"codebook sensitivity {sensitivity} must be a finite value >= 0 (or unknown)");
        Levels = (float[])levels.Clone();
        Sensitivity = sensitivity;
        NormScale = normScale;
        NormOffset = normOffset;
        Bits = System.Numerics.BitOperations.Log2((uint)n);
        Midpoints = new float[n - 1];
        for (int i = 0; i + 1 < n; i++) Midpoints[i] = (Levels[i] + Levels[i + 1]) * 0.5f;
    }

    /// <summary>intB on [-1, 1]: 2^B evenly spaced levels including both ends.</summary>
    public static NuqCodebook Uniform(int bits)
    {
        int n = 1 << bits;
        var levels = new float[n];
        for (int i = 0; i < n; i++) levels[i] = -1f + 2f * i / (n - 1);
        return new NuqCodebook(levels);
    }

    /// <summary>Index of the nearest level (ties and NaN to the lower one).</summary>
    public int Nearest(float u)
    {
        var mids = Midpoints;
        int code = 0;
        for (int i = 0; i < mids.Length; i++) code += u > mids[i] ? 1 : 0;
        return code;
    }

    /// <summary>What each code decodes to on the normalized range.</summary>
    public float[] DecodeLevels(bool qnorm)
    {
        var d = (float[])Levels.Clone();
        if (qnorm) for (int i = 0; i < d.Length; i++) d[i] = d[i] * NormScale + NormOffset;
        return d;
    }
}
