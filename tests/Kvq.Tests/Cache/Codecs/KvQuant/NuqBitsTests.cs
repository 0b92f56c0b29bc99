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

    [Fact]
    public void ShortBuffersAreRejected()
    {
        Assert.Throws<ArgumentException>(() => NuqBits.Pack(new byte[9], 3, new byte[3]));
        Assert.Throws<ArgumentException>(() => NuqBits.Unpack(new byte[3], 3, new byte[9]));
    }
}
