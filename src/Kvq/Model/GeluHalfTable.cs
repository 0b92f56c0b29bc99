namespace Kvq.Model;

/// <summary>
/// GELU (tanh approximation) as ggml's CPU backend computes it in GeGLU: for -10 &lt; x &lt; 10 the input is rounded to
/// f16 and the result looked up in a table of 65,536 f16 values (gelu of every f16 number, rounded to f16); below -10
/// it is 0 and from 10 on it is x. Kvq's inference forward uses it for Gemma so that its feed-forward rounds where
/// llama.cpp's does: with Q8_0 weights the next product re-rounds that output to 8 bits, and a difference of one f16
/// step moves a code often enough to flip Gemma's near-tied synthetic logits (docs/models.md). The table is built here
/// from the formula (ggml's own table, in the libggml-cpu LLamaSharp loads, is the test's oracle: GeluHalfTableTests);
/// the exact function stays in <see cref="DecoderExtras.Gelu"/> for the calibration's differentiable forward.
/// </summary>
public static class GeluHalfTable
{
    private static readonly Lazy<Half[]> Table = new(Build);

    /// <summary>gelu(h) rounded to f16 for every f16 bit pattern h (index = the bits).</summary>
    public static ReadOnlySpan<Half> Values => Table.Value;

    private static Half[] Build()
    {
        var t = new Half[1 << 16];
        for (int i = 0; i < t.Length; i++)
        {
            float x = (float)BitConverter.UInt16BitsToHalf((ushort)i);
            t[i] = (Half)Formula(x);
        }
        return t;
    }

    /// <summary>0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))) in f32 in the operation order of the table's source,
    /// whose compiler fuses 1 + (0.044715 x) x into one FMA: without it one entry of the 63,488 finite ones (x = -1.999)
    /// lands on the other side of an f16 rounding tie.</summary>
    public static float Formula(float x) =>
        0.5f * x * (1.0f + MathF.Tanh(DecoderExtras.GeluC * x * MathF.FusedMultiplyAdd(DecoderExtras.GeluA * x, x, 1.0f)));

    /// <summary>gelu(x) through the table.</summary>
    public static float Gelu(float x, ReadOnlySpan<Half> table)
    {
        if (x <= -10f) return 0f;
        if (x >= 10f) return x;
        return (float)table[BitConverter.HalfToUInt16Bits((Half)x)];
    }

    /// <summary>gate = gelu(gate) * up through the table.</summary>
    public static void GeGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        var table = Values;
        for (int i = 0; i < gate.Length; i++) gate[i] = Gelu(gate[i], table) * up[i];
    }
}
