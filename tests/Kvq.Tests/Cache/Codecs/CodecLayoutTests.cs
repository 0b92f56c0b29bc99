using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Model.Loading;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>Exact bytes by kind and bits per value of each format, computed by hand.</summary>
public class CodecLayoutTests
{
    [Theory]
    //          name        side   bt   hd   codes  scales zeros  bits
    [InlineData("f32", 0, 32, 128, 16384, 0, 0, 32.0)]
    [InlineData("f16", 0, 32, 128, 8192, 0, 0, 16.0)]
    [InlineData("bf16", 1, 32, 128, 8192, 0, 0, 16.0)]
    [InlineData("q8_0", 0, 32, 128, 4096, 256, 0, 8.5)]      // 34 bytes / 32 values
    [InlineData("q8_0", 1, 16, 64, 1024, 64, 0, 8.5)]
    [InlineData("q4_0", 0, 32, 128, 2048, 256, 0, 4.5)]      // 18 bytes / 32 values
    [InlineData("q4_0", 1, 7, 96, 336, 42, 0, 4.5)]
    [InlineData("int8", 0, 32, 128, 4096, 256, 256, 9.0)]    // 8 + 32/32
    [InlineData("int4", 0, 32, 128, 2048, 256, 256, 5.0)]    // 4 + 32/32
    [InlineData("int4", 1, 32, 8, 128, 64, 64, 8.0)]         // head dim 8: one group of 8 -> 4 + 32/8
    [InlineData("int2", 0, 32, 128, 1024, 256, 256, 3.0)]
    [InlineData("int4-g64", 0, 32, 128, 2048, 128, 128, 4.5)]
    [InlineData("int4-g64", 0, 32, 32, 512, 64, 64, 5.0)]   // head dim 32 < 64: one group per token
    [InlineData("int4-tok", 0, 32, 128, 2048, 64, 64, 4.25)]
    [InlineData("int2-tok", 0, 32, 64, 512, 64, 64, 2.5)]
    [InlineData("int8-ch", 0, 32, 128, 4096, 256, 256, 9.0)] // 8 + 32/32 (32 tokens per channel group)
    [InlineData("int4-ch", 0, 32, 128, 2048, 256, 256, 5.0)]
    [InlineData("int4-ch", 0, 64, 128, 4096, 256, 256, 4.5)] // 4 + 32/64
    [InlineData("int2-ch", 1, 32, 64, 512, 128, 128, 3.0)]
    [InlineData("kivi2", 0, 32, 128, 1024, 256, 256, 3.0)]  // keys: per channel over 32 tokens
    [InlineData("kivi2", 1, 32, 128, 1024, 256, 256, 3.0)]  // values: per token, groups of 32
    [InlineData("kivi4", 0, 32, 64, 1024, 128, 128, 5.0)]
    [InlineData("kivi4", 1, 32, 64, 1024, 128, 128, 5.0)]
    public void BytesByKindAndBitsPerValue(string name, int side, int bt, int hd, long codes, long scales, long zeros, double bits)
    {
        var c = KvCodecRegistry.Create(name, (KvSide)side, bt, hd);
        Assert.Equal(new KvBytes(codes, scales, zeros, 0, 0, 0), c.BlockLayout);
        Assert.Equal(codes + scales + zeros, (long)c.BlockBytes);
        Assert.Equal(bits, c.BitsPerElement, 12);
    }

    [Fact]
    public void KiviKeepsA128TokenResidualOnBothSides()
    {
        foreach (var side in CodecTestData.Sides)
            foreach (var name in new[] { "kivi2", "kivi4" })
            {
                var c = KvCodecRegistry.Create(name, side, 32, 64);
                Assert.True(c.EncodesWholeBlocks);
                Assert.Equal(128, c.ResidualTokens);
            }
        Assert.IsType<UniformChannelCodec>(KvCodecRegistry.Create("int4-ch", KvSide.Key, 32, 64));
        Assert.Equal(0, KvCodecRegistry.Create("int4-ch", KvSide.Key, 32, 64).ResidualTokens);
        Assert.False(KvCodecRegistry.Create("int4", KvSide.Key, 32, 64).EncodesWholeBlocks);
    }

    [Fact]
    public void StoriesHeadDim8RefusesGgmlBlocksAtCacheCreation()
    {
        using var weights = GgufModelLoader.Load(Fixtures.StoriesGguf);
        var shape = weights.Config.CreateKvShape();
        Assert.Equal(8, shape.HeadDim);
        foreach (var name in new[] { "q8_0", "q4_0" })
        {
            var e = Assert.Throws<KvSpecException>(() => new PagedKvCache(shape, KvCacheConfig.Parse(name)));
            Assert.Contains("head dim 8", e.Message);
            Assert.Contains("32", e.Message);
        }
        // The per-token int formats fall back to one group per token there.
        Assert.Equal(8.0, new PagedKvCache(shape, KvCacheConfig.Parse("int4")).KeyCodec.BitsPerElement, 12);
    }
}
