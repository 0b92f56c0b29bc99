using Kvq.Cache.Codecs;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>Bit-plane packing: every run length that fills whole bytes, 1..256 codes, for 8/4/2 bits.</summary>
public class PackedCodesTests
{
    [Theory]
    [InlineData(8)]
    [InlineData(4)]
    [InlineData(2)]
    public void PackThenReadBackAndSimdDequantizeEqualsReference(int bits)
    {
        var rng = new Random(bits);
        for (int n = 1; n <= 256; n++)
        {
            if (!PackedCodes.CanPack(n, bits)) { Assert.NotEqual(0, n * bits % 8); continue; }
            var codes = new byte[n];
            for (int i = 0; i < n; i++) codes[i] = (byte)rng.Next(1 << bits);
            var packed = new byte[PackedCodes.Bytes(n, bits) + 3];
            rng.NextBytes(packed); // bytes beyond the run must not be read into the result
            PackedCodes.Pack(codes, bits, packed);
            for (int i = 0; i < n; i++) Assert.Equal(codes[i], PackedCodes.Code(packed, n, bits, i));
            float scale = 0.37f + n * 1e-3f, zero = -1.25f - n * 1e-2f;
            var fast = new float[n + 1];
            var slow = new float[n + 1];
            fast[n] = slow[n] = 42f;
            PackedCodes.Dequantize(packed, n, bits, scale, zero, fast);
            PackedCodes.DequantizeReference(packed, n, bits, scale, zero, slow);
            Assert.Equal(slow, fast);
            Assert.Equal(42f, fast[n]);
            for (int i = 0; i < n; i++) Assert.Equal(codes[i] * scale + zero, fast[i]);
        }
    }

    [Fact]
    public void FourBitsUseQ4_0NibbleOrder()
    {
        var codes = new byte[32];
        for (int i = 0; i < 32; i++) codes[i] = (byte)(i % 16);
        codes[20] = 9;
        var packed = new byte[16];
        PackedCodes.Pack(codes, 4, packed);
        Assert.Equal(codes[3] | codes[19] << 4, packed[3]);   // value j low nibble of byte j, j + 16 high nibble
        Assert.Equal(codes[4] | 9 << 4, packed[4]);
    }
}
