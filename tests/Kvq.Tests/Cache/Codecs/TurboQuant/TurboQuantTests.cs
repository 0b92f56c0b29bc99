using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.Rotation;
using Kvq.Cache.Codecs.TurboQuant;

namespace Kvq.Tests.Cache.Codecs.TurboQuant;

/// <summary>TurboQuant-style codecs: the codebook, exact bit accounting, the QJL sketch's unbiasedness, seeding, names.</summary>
public class TurboQuantTests
{
    /// <summary>For large d a coordinate of a random unit vector times sqrt(d) is N(0, 1), whose Lloyd-Max levels are
    /// known: 1 bit +-0.7979 (sqrt(2/pi)), 2 bits +-0.4528 and +-1.510.</summary>
    [Fact]
    public void CodebookMatchesGaussianLloydMaxForLargeDims()
    {
        var b1 = LloydMaxCodebook.For(4096, 1).Levels;
        Assert.Equal(0.7979, b1[1], 2e-3);
        Assert.Equal(-b1[1], b1[0]);
        var b2 = LloydMaxCodebook.For(4096, 2).Levels;
        Assert.Equal(0.4528, b2[2], 3e-3);
        Assert.Equal(1.510, b2[3], 4e-3);
        // Small d: the density (1 - x^2)^((d-3)/2) has lighter tails, so the outer level sits further in.
        Assert.True(LloydMaxCodebook.For(8, 2).Levels[3] < b2[3] - 0.05);
    }

    [Fact]
    public void EncodePicksNearestLevel()
    {
        var cb = LloydMaxCodebook.For(64, 3);
        var rng = new Random(5);
        for (int i = 0; i < 2000; i++)
        {
            float x = (float)(rng.NextDouble() * 8 - 4);
            int k = cb.Encode(x);
            for (int j = 0; j < cb.Levels.Length; j++) Assert.True(Math.Abs(x - cb.Levels[k]) <= Math.Abs(x - cb.Levels[j]) + 1e-6, $"{x}: level {k} not nearest");
        }
    }

    [Theory]
    [InlineData("tq3", KvSide.Key, 64, 26)]          // 64 x 3 bits = 24 bytes + f16 norm
    [InlineData("tq2.5", KvSide.Value, 64, 22)]      // 32 x 3 + 32 x 2 = 160 bits = 20 bytes + 2
    [InlineData("tq3:qjl", KvSide.Key, 64, 28)]      // 64 x 2 bits + 64 sign bits + two f16
    [InlineData("tq3:qjl", KvSide.Value, 64, 26)]    // values take no sketch
    [InlineData("tq2", KvSide.Key, 96, 26)]          // 192 bits + 2
    [InlineData("tq3.5", KvSide.Key, 8, 6)]          // 4 x 4 + 4 x 3 = 28 bits -> 4 bytes + 2
    public void BitsAreCountedExactly(string name, KvSide side, int hd, int tokenBytes)
    {
        var c = KvCodecRegistry.Create(name, side, 32, hd);
        Assert.Equal(32 * tokenBytes, c.BlockBytes);
        Assert.Equal(tokenBytes * 8.0 / hd, c.BitsPerElement, 12);
    }

    /// <summary>
    /// QJL's point: q . k~ is unbiased. Over many keys, the mean of q . (k~ - k) with the sketch is near 0, while
    /// without it (the same 2-bit codebook) the codebook's shrinkage toward 0 biases q . k toward 0 when q is along k.
    /// </summary>
    [Fact]
    public void QjlSketchRemovesTheInnerProductBias()
    {
        const int hd = 64, bt = 32, blocks = 40;
        double biasQjl = 0, biasPlain = 0, scale = 0;
        var qjl = KvCodecRegistry.Create("tq3:qjl", new KvCodecContext(KvSide.Key, bt, hd, 0, 0));
        var plain = KvCodecRegistry.Create("tq2", new KvCodecContext(KvSide.Key, bt, hd, 0, 0));
        for (int b = 0; b < blocks; b++)
        {
            var xs = CodecTestData.Tokens(bt, hd, 300 + b);
            foreach (var (c, isQjl) in new[] { (qjl, true), (plain, false) })
            {
                var y = new float[bt * hd];
                c.DecodeBlock(CodecTestData.Encode(c, xs, b), bt, y);
                for (int t = 0; t < bt; t++)
                {
                    // q = the key itself: the inner product is |k|^2.
                    double exact = 0, approx = 0;
                    for (int i = 0; i < hd; i++) { exact += xs[t * hd + i] * (double)xs[t * hd + i]; approx += xs[t * hd + i] * (double)y[t * hd + i]; }
                    if (isQjl) { biasQjl += approx - exact; scale += exact; }
                    else biasPlain += approx - exact;
                }
            }
        }
        Assert.True(biasPlain / scale < -0.05, $"2-bit codebook: relative bias {biasPlain / scale:P2} (expected shrinkage)");
        Assert.True(Math.Abs(biasQjl / scale) < 0.02, $"with QJL: relative bias {biasQjl / scale:P2}");
    }

    [Fact]
    public void RotationIsSeededPerLayerHeadAndSide()
    {
        var xs = CodecTestData.Tokens(32, 64, 9);
        byte[] Block(int layer, int head, KvSide side)
        {
            var c = KvCodecRegistry.Create("tq3", new KvCodecContext(side, 32, 64, layer, head));
            Assert.IsType<RotatedCodec>(c);
            return CodecTestData.Encode(c, xs, 1);
        }
        Assert.Equal(Block(2, 1, KvSide.Key), Block(2, 1, KvSide.Key));
        Assert.NotEqual(Block(2, 1, KvSide.Key), Block(2, 0, KvSide.Key));
        Assert.NotEqual(Block(2, 1, KvSide.Key), Block(3, 1, KvSide.Key));
        Assert.NotEqual(Block(2, 1, KvSide.Key), Block(2, 1, KvSide.Value));
    }

    [Theory]
    [InlineData("tq5")]
    [InlineData("tq2.25")]
    [InlineData("tq1.5")]
    [InlineData("tq3:fast")]
    public void RefusesMalformedNames(string name) =>
        Assert.Contains(name, Assert.Throws<KvSpecException>(() => KvCodecRegistry.Parse(name)).Message);
}
