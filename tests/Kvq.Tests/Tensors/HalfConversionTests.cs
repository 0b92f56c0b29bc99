using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Tests.Tensors;

public class HalfConversionTests
{
    /// <summary>The SIMD conversion equals the scalar cast on every f16 bit pattern, at odd lengths and offsets.</summary>
    [Fact]
    public void ToSingleEqualsScalarCastOnEveryBitPattern()
    {
        var all = new Half[65536];
        for (int i = 0; i < all.Length; i++) all[i] = BitConverter.UInt16BitsToHalf((ushort)i);
        var dst = new float[all.Length];
        HalfDot.ToSingle(all, dst);
        for (int i = 0; i < all.Length; i++)
        {
            float expected = (float)all[i];
            Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(dst[i]) || (float.IsNaN(expected) && float.IsNaN(dst[i])),
                $"0x{i:X4}: {expected} vs {dst[i]}");
        }
        foreach (int n in new[] { 0, 1, 15, 17, 33, 100 })
        {
            var part = new float[n];
            HalfDot.ToSingle(all.AsSpan(15360 + 7, n), part);
            for (int i = 0; i < n; i++) Assert.Equal((float)all[15360 + 7 + i], part[i]);
        }
    }
}

public class RopeRunTests
{
    [Theory]
    [InlineData(RopeStyle.Normal, 64, 0)]
    [InlineData(RopeStyle.Neox, 128, 4064)]
    [InlineData(RopeStyle.Normal, 8, 1_000_000)]
    public void RotateRunEqualsPerRowRotation(RopeStyle style, int headDim, long first)
    {
        var rope = new Rope(headDim, headDim, 10000f, 1f, style);
        var r = new Random(headDim);
        const int rows = 32;
        var a = Enumerable.Range(0, rows * headDim).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var b = (float[])a.Clone();
        rope.RotateRun(a, rows, first);
        Span<float> cos = stackalloc float[headDim / 2];
        Span<float> sin = stackalloc float[headDim / 2];
        for (int j = 0; j < rows; j++)
        {
            rope.Angles(first + j, cos, sin);
            rope.Rotate(b.AsSpan(j * headDim, headDim), cos, sin);
        }
        // Both sides carry the float error of the angle itself (~position x 6e-8 rad, llama.cpp's recurrence); the run
        // stays within that.
        float tol = 1e-4f + first * 1.5e-7f;
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= tol, $"{i}: {a[i]} vs {b[i]}");
    }

    [Theory]
    [InlineData(RopeStyle.Normal, 64)]
    [InlineData(RopeStyle.Neox, 128)]
    public void RotateAtFollowsEachRowsPosition(RopeStyle style, int headDim)
    {
        var rope = new Rope(headDim, headDim, 10000f, 1f, style);
        var r = new Random(headDim + 1);
        // Runs, gaps and a repeat, as a cache whose policy evicted tokens holds them.
        int[] positions = [3, 4, 5, 9, 10, 40, 41, 42, 43, 7, 7, 2000, 2001, 13];
        int rows = positions.Length;
        var a = Enumerable.Range(0, rows * headDim).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var b = (float[])a.Clone();
        rope.RotateAt(a, rows, positions);
        Span<float> cos = stackalloc float[headDim / 2];
        Span<float> sin = stackalloc float[headDim / 2];
        for (int j = 0; j < rows; j++)
        {
            rope.Angles(positions[j], cos, sin);
            rope.Rotate(b.AsSpan(j * headDim, headDim), cos, sin);
        }
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-4f, $"{i}: {a[i]} vs {b[i]}");
    }
}
