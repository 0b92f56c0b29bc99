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
