namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// A value token's zero and range in 16 bits (instead of two f16): the range on a log scale, 10 bits, range =
/// 2^(r/32 - 16) (steps of 2.2%, 1.5e-5 to 6.5e4, f16's span), and the zero as a multiple of range/16 in 6 signed bits
/// (-2 to +1.94 ranges). Encoding picks the smallest range whose interval around the rounded zero still holds every
/// non-outlier value, so nothing is clamped: the cost is a range up to ~5% wider than the f16 pair's (1/32 for the
/// zero's rounding plus one log step), measured in docs/kvquant.md.
/// </summary>
public static class TokenScale
{
    public const int RangeCodes = 1024;
    private const int ZeroSteps = 16, ZeroMin = -32, ZeroMax = 31;
    private static readonly float[] Ranges = BuildRanges();

    private static float[] BuildRanges()
    {
        var r = new float[RangeCodes];
        for (int i = 0; i < RangeCodes; i++) r[i] = (float)Math.Pow(2, i / 32.0 - 16);
        return r;
    }

    /// <summary>Every code's range (the fused value kernel decodes scales itself; read only).</summary>
    internal static float[] RangeTable => Ranges;

    /// <summary>Range of code r (the exact float both encoder and decoder use).</summary>
    public static float Range(int r) => Ranges[r];

    /// <summary>(zero, range) of a packed scale: bits 0-9 range code, 10-15 zero steps (signed).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public static (float Zero, float Range) Decode(ushort packed)
    {
        float range = Ranges[packed & 1023];
        int z = (packed >> 10) - ((packed >> 10) >= 32 ? 64 : 0);
        return (z * (range / ZeroSteps), range);
    }

    /// <summary>The zero step nearest to <paramref name="mid"/> at range code <paramref name="r"/> (unclamped).</summary>
    public static int ZeroCode(float mid, int r) => (int)MathF.Round(mid / (Ranges[r] / ZeroSteps));

    /// <summary>Range code r and zero step z (clamped to the 6 signed bits) packed, with what they decode to.</summary>
    public static (ushort Packed, float Zero, float Range) Pack(int r, int z)
    {
        z = Math.Clamp(z, ZeroMin, ZeroMax);
        float range = Ranges[r];
        return ((ushort)(r | (z & 63) << 10), z * (range / ZeroSteps), range);
    }

    /// <summary>The packed scale for non-outlier values in [min, max] (finite, min &lt;= max) and what it decodes to.</summary>
    public static (ushort Packed, float Zero, float Range) Encode(float min, float max)
    {
        float mid = (max + min) * 0.5f, half = (max - min) * 0.5f;
        int r = half > 0 ? (int)Math.Ceiling(32 * (Math.Log2(half) + 16) - 1e-6) : 0;
        r = Math.Clamp(r, 0, RangeCodes - 1);
        while (r > 0 && Ranges[r - 1] >= half) r--;
        while (true)
        {
            float range = Ranges[r];
            int z = (int)Math.Clamp(MathF.Round(mid / (range / ZeroSteps)), ZeroMin, ZeroMax);
            float zero = z * (range / ZeroSteps);
            if ((max - zero <= range && zero - min <= range) || r == RangeCodes - 1)
                return ((ushort)(r | (z & 63) << 10), zero, range);
            r++;
        }
    }
}
