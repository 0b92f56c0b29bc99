using Kvq.Tensors;

namespace Kvq.Tests.Tensors;

/// <summary>Random and hand-made inputs for the quantized-format tests.</summary>
internal static class QuantTestData
{
    public static readonly GgmlType[] BlockTypes =
        [GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K,
         GgmlType.IQ4_NL, GgmlType.IQ4_XS];

    public static readonly GgmlType[] EncodableTypes =
        [GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Q8_0];

    public static TheoryData<GgmlType> AllBlockTypes()
    {
        var d = new TheoryData<GgmlType>();
        foreach (var t in BlockTypes) d.Add(t);
        return d;
    }

    /// <summary>Byte offsets of the f16 scale fields (d, and m/dmin where present) inside one block.</summary>
    public static int[] HalfFields(GgmlType t) => t switch
    {
        GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.Q8_0 or GgmlType.IQ4_NL or GgmlType.IQ4_XS => [0],
        GgmlType.Q4_1 or GgmlType.Q5_1 or GgmlType.Q4_K or GgmlType.Q5_K => [0, 2],
        GgmlType.Q6_K => [208],
        _ => throw new ArgumentException(t.ToString()),
    };

    /// <summary>
    /// <paramref name="blocks"/> blocks of random bytes whose f16 scales are replaced by sane random values
    /// (magnitude 2^-9 .. 2^-5, random sign, never zero, never inf/NaN).
    /// </summary>
    public static byte[] RandomBlocks(GgmlType t, int blocks, Random rng)
    {
        int ts = GgmlTypeInfo.TypeSize(t);
        var b = new byte[blocks * ts];
        rng.NextBytes(b);
        for (int i = 0; i < blocks; i++)
            foreach (int off in HalfFields(t))
            {
                float mag = MathF.Pow(2, -9 + 4 * rng.NextSingle());
                var h = (Half)(rng.Next(2) == 0 ? mag : -mag);
                BitConverter.TryWriteBytes(b.AsSpan(i * ts + off, 2), BitConverter.HalfToUInt16Bits(h));
            }
        return b;
    }

    /// <summary>Uniform in [-1, 1), never exactly zero.</summary>
    public static float[] RandomVector(int n, Random rng)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            float v;
            do v = rng.NextSingle() * 2 - 1; while (v == 0);
            x[i] = v;
        }
        return x;
    }

    /// <summary>Approximately normal (sum of uniforms), scaled; never exactly zero.</summary>
    public static float[] RandomGaussian(int n, Random rng, float sigma = 1)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            float v;
            do v = (rng.NextSingle() + rng.NextSingle() + rng.NextSingle() + rng.NextSingle() - 2) * 1.7320508f * sigma;
            while (v == 0);
            x[i] = v;
        }
        return x;
    }

    public static void WriteHalf(byte[] b, int offset, float v) =>
        BitConverter.TryWriteBytes(b.AsSpan(offset, 2), BitConverter.HalfToUInt16Bits((Half)v));

    /// <summary>(Σ a·x in double, Σ |a·x|) for tolerances.</summary>
    public static (double Dot, double Magnitude) DoubleDot(ReadOnlySpan<float> a, ReadOnlySpan<float> x)
    {
        double s = 0, m = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double p = (double)a[i] * x[i];
            s += p;
            m += Math.Abs(p);
        }
        return (s, m);
    }
}
