namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>The 16-bit token scale restated plainly, for the encoder oracles (<see cref="NuqEncodeReferenceTests"/>,
/// <see cref="TokenScaleTests"/>): range code r stands for 2^(r/32 - 16), the zero for a multiple of range/16.</summary>
internal static class TokenScaleReference
{
    public static float RangeOf(int r) => (float)Math.Pow(2, r / 32.0 - 16);

    /// <summary>The smallest range code (searched from 0) whose interval around its rounded zero (clamped to 6 signed
    /// bits) holds [min, max]; the top code when none does.</summary>
    public static (int R, int Z) Smallest(float min, float max)
    {
        float mid = (max + min) * 0.5f;
        for (int r = 0; ; r++)
        {
            float range = RangeOf(r);
            int z = Math.Clamp((int)MathF.Round(mid / (range / 16)), -32, 31);
            float zero = z * (range / 16);
            if ((max - zero <= range && zero - min <= range) || r == 1023) return (r, z);
        }
    }
}
