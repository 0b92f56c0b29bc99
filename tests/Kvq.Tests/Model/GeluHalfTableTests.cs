using Kvq.Model;
using Kvq.Tests.Tensors;

namespace Kvq.Tests.Model;

/// <summary>Gemma's GELU as llama.cpp's CPU backend computes it: the f16 table against ggml-cpu's own, and the GeGLU
/// that reads it against the branches of ggml's vec_geglu_f32.</summary>
public class GeluHalfTableTests
{
    [LinuxFact("reads ggml_table_gelu_f16 from the libggml-cpu that LLamaSharp loads")]
    public void TableEqualsGgmlCpusTableBitForBit()
    {
        Assert.True(GgmlReference.CpuAvailable, "libggml-cpu not found in this process");
        var theirs = GgmlReference.CpuGeluTable();
        var ours = GeluHalfTable.Values;
        int checkedFinite = 0, differ = 0;
        for (int i = 0; i < theirs.Length; i++)
        {
            var x = BitConverter.UInt16BitsToHalf((ushort)i);
            if (!Half.IsFinite(x)) continue;   // gelu of inf/NaN is never read (|x| >= 10 bypasses the table)
            checkedFinite++;
            if (BitConverter.HalfToUInt16Bits(ours[i]) != theirs[i])
            {
                if (differ++ < 12) Console.WriteLine($"TABLE x={(float)x:R} ours={(float)ours[i]:R} theirs={(float)BitConverter.UInt16BitsToHalf(theirs[i]):R} f32={GeluHalfTable.Formula((float)x):R}");
            }
        }
        Console.WriteLine($"TABLE differ {differ} of {checkedFinite}");
        Assert.True(checkedFinite > 63000, $"{checkedFinite} finite f16 values");
        Assert.Equal(0, differ);
        Assert.NotEqual(0, theirs[BitConverter.HalfToUInt16Bits((Half)1.0f)]);   // the table was filled
    }

    [Fact]
    public void GeGluRoundsWhereGgmlDoes()
    {
        var rng = new Random(TestSeeds.Of("gelu-half-table"));
        const int n = 1001;
        var gate = new float[n];
        var up = new float[n];
        for (int i = 0; i < n; i++)
        {
            gate[i] = (float)(rng.NextDouble() * 26 - 13);   // beyond both cut-offs (+-10)
            up[i] = (float)(rng.NextDouble() * 4 - 2);
        }
        var y = (float[])gate.Clone();
        GeluHalfTable.GeGlu(y, up);
        int inTable = 0;
        for (int i = 0; i < n; i++)
        {
            float x = gate[i];
            float expected = x <= -10f ? 0f
                : x >= 10f ? x * up[i]
                : (float)(Half)GeluHalfTable.Formula((float)(Half)x) * up[i];
            Assert.Equal(expected, y[i]);
            if (x > -10f && x < 10f)
            {
                inTable++;
                // the table's result is the exact GELU to f16 precision (input and output rounded)
                Assert.True(Math.Abs(y[i] - DecoderExtras.Gelu(x) * up[i]) <= 4e-3 * Math.Abs(up[i]) * (1 + Math.Abs(x)), $"x={x}");
            }
        }
        Assert.InRange(inTable, 600, 900);
    }
}
