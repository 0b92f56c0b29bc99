namespace Kvq.Cache.Codecs;

/// <summary>
/// Asymmetric (min/max) uniform quantization of a set of values to codes 0..L, L = 2^bits - 1, with scale and zero
/// stored as f16: zero = f16(min), scale = f16((max - min) / L), code = clamp(round((x - zero) / scale), 0, L)
/// (round half to even), decode = code * scale + zero. Codes are computed from the f16-rounded scale and zero, so
/// encoding aims at exactly what decoding will see. KIVI's and KVQuant's int baselines use this scheme.
/// Values beyond f16's range (65504) are not representable as scale or zero; KV activations stay far below.
/// </summary>
public static class AsymmetricQuantizer
{
    public static int Levels(int bits) => (1 << bits) - 1;

    /// <summary>The stored scale and zero for values in [lo, hi].</summary>
    public static (Half Scale, Half Zero) Fit(float lo, float hi, int bits) =>
        ((Half)((hi - lo) / Levels(bits)), (Half)lo);

    public static byte Code(float x, float scale, float zero, int bits)
    {
        if (scale == 0f) return 0;
        float v = MathF.Round((x - zero) / scale);
        return (byte)Math.Clamp((int)v, 0, Levels(bits));
    }

    /// <summary>
    /// Largest |decode(encode(x)) - x| for x in [lo, hi]: half a step, plus what rounding zero and scale to f16 can
    /// add (values below f16(min) clamp to code 0; L steps of the rounded scale may fall short of max), plus f32
    /// rounding of the decode.
    /// </summary>
    public static float MaxAbsError(float lo, float hi, int bits)
    {
        int levels = Levels(bits);
        float s = (hi - lo) / levels;
        var (sh, zh) = Fit(lo, hi, bits);
        float sf = (float)sh, zf = (float)zh;
        return sf / 2 + MathF.Abs(zf - lo) + levels * MathF.Abs(s - sf) + 1e-6f * MathF.Max(MathF.Abs(lo), MathF.Abs(hi));
    }
}
