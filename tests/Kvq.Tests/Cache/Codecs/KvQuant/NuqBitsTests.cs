using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

public class NuqBitsTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void PackUnpackRoundTripsEveryLength(int bits)
    {
        var rng = new Random(bits);
        for (int n = 1; n <= 300; n++)
        {
            var codes = new byte[n];
            for (int i = 0; i < n; i++) codes[i] = (byte)rng.Next(1 << bits);
            var packed = new byte[NuqBits.Bytes(n, bits)];
            NuqBits.Pack(codes, bits, packed);
            for (int i = 0; i < n; i++) Assert.Equal(codes[i], KvQuantReference.Code(packed, i, bits));
            var back = new byte[n];
            NuqBits.Unpack(packed, bits, back);
            Assert.Equal(codes, back);
        }
    }

    /// <summary>NuqBits.Set (channel-major key blocks write one token's code into each channel's run) against the
    /// bit-by-bit model: random starting bytes, every slot rewritten in a shuffled order, the other bits untouched.</summary>
    [Theory]
    [InlineData(2, 7)]
    [InlineData(3, 31)]
    [InlineData(3, 32)]
    [InlineData(4, 17)]
    public void SetWritesOneCodeAndLeavesTheRest(int bits, int n)
    {
        var rng = new Random(bits * 100 + n);
        var packed = new byte[NuqBits.Bytes(n, bits)];
        rng.NextBytes(packed);
        var model = (byte[])packed.Clone();
        foreach (int i in Enumerable.Range(0, n).OrderBy(_ => rng.Next()))
        {
            int code = rng.Next(1 << bits);
            NuqBits.Set(packed, i, bits, code | (1 << bits));   // bits above the code are ignored
            for (int b = 0; b < bits; b++)
            {
                int bit = i * bits + b;
                model[bit >> 3] = (byte)((model[bit >> 3] & ~(1 << (bit & 7))) | ((code >> b & 1) << (bit & 7)));
            }
            Assert.Equal(model, packed);
            Assert.Equal(code, KvQuantReference.Code(packed, i, bits));
        }
        Assert.Throws<ArgumentException>(() => NuqBits.Set(packed, n + 8 / bits + 1, bits, 0));
    }

    [Fact]
    public void ShortBuffersAreRejected()
    {
        Assert.Throws<ArgumentException>(() => NuqBits.Pack(new byte[9], 3, new byte[3]));
        Assert.Throws<ArgumentException>(() => NuqBits.Unpack(new byte[3], 3, new byte[9]));
    }
}
