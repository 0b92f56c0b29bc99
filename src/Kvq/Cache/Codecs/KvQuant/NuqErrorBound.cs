namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>Error bounds and a scalar decode shared by the nuq codecs' test oracles (<see cref="IKvCodecReference"/>).</summary>
internal static class NuqErrorBound
{
    /// <summary>
    /// The largest |u - decode(code)| over the code interval that holds u: the interval between the midpoints around
    /// u's nearest level, cut to [-1, 1] but widened to reach u itself when u lies outside (clamping).
    /// </summary>
    public static float Interval(float u, NuqCodebook book, float[] decodeLevels)
    {
        int i = book.Nearest(u);
        float lo = i == 0 ? -1f : book.Midpoints[i - 1];
        float hi = i == book.Midpoints.Length ? 1f : book.Midpoints[i];
        lo = Math.Min(Math.Max(lo, -1f), u);
        hi = Math.Max(Math.Min(hi, 1f), u);
        float d = decodeLevels[i];
        return Math.Max(Math.Abs(lo - d), Math.Abs(hi - d));
    }

    /// <summary>Half an f16 ulp of x (round to nearest), with f16's subnormal step, or the overflow past 65504.</summary>
    public static float F16(float x)
    {
        float a = Math.Abs(x);
        return a > 65504f ? a - 65504f + 16f : a / 2048f + 1f / (1 << 25);
    }

    /// <summary>Rounding of the decode arithmetic (zero + range * level, normalization) in f32.</summary>
    public static float Slack(float zero, float range) => (Math.Abs(zero) + Math.Abs(range)) * 4e-7f + 1e-30f;

    /// <summary>Code <paramref name="i"/> of <paramref name="bits"/> bits, read bit by bit (the oracle's own reading).</summary>
    public static int Code(ReadOnlySpan<byte> packed, int i, int bits)
    {
        int v = 0;
        for (int b = 0; b < bits; b++)
        {
            int bit = i * bits + b;
            v |= ((packed[bit >> 3] >> (bit & 7)) & 1) << b;
        }
        return v;
    }
}
