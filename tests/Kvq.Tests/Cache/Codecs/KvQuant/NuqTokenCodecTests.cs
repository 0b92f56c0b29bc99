using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

public class NuqTokenCodecTests
{
    private const int BlockTokens = 32;

    private static NuqTokenCodec Codec(string spec, int headDim, int seed, KvSide side = KvSide.Value)
    {
        var s = KvQuantSpec.TryParse(spec)!;
        var rng = new Random(seed);
        var levels = new float[1 << s.Bits];
        for (int i = 0; i < levels.Length; i++) levels[i] = -1f + 2f * (i + (float)(rng.NextDouble() * 0.8 - 0.4)) / (levels.Length - 1);
        Array.Sort(levels);
        var book = s.Uniform ? NuqCodebook.Uniform(s.Bits) : new NuqCodebook(levels, 1.02f, -0.01f);
        return new NuqTokenCodec(s, side, BlockTokens, headDim, book);
    }

    [Theory]
    [InlineData("nuq4-1%", 64)]
    [InlineData("nuq3-1%", 64)]
    [InlineData("nuq2-1%", 64)]
    [InlineData("nuq3-1%", 8)]
    [InlineData("nuq3-1%", 13)]
    [InlineData("nuq3-1%", 96)]
    [InlineData("nuq4-5%", 96)]
    [InlineData("nuq3-1%", 300)]
    [InlineData("nuq3", 64)]
    [InlineData("nuq3-1%:uniform", 64)]
    public void DecodeMatchesReferenceAndErrorIsBounded(string spec, int d)
    {
        var codec = Codec(spec, d, d + spec.Length);
        var x = KvQuantTestData.Activations(BlockTokens, d, seed: d * 7);
        var block = new byte[codec.BlockBytes];
        new Random(9).NextBytes(block);
        for (int t = 0; t < BlockTokens; t++) codec.EncodeToken(x.AsSpan(t * d, d), block, t);
        var dec = new float[BlockTokens * d];
        codec.DecodeBlock(block, BlockTokens, dec);
        int slots = 2 * codec.OutliersPerTail;
        var levels = codec.Codebook.DecodeLevels(codec.Spec.QNorm);
        Assert.Equal(KvQuantReference.DecodeToken(block, BlockTokens, d, codec.Spec.Bits, slots, levels, BlockTokens), dec);
        float maxErr = KvQuantReference.MaxError(codec.Codebook.Levels);
        int k = codec.OutliersPerTail;
        for (int t = 0; t < BlockTokens; t++)
        {
            var row = x.AsSpan(t * d, d).ToArray();
            // The k largest and k smallest are exact; the rest lie within the token's range and its codebook's error.
            var order = Enumerable.Range(0, d).OrderBy(c => row[c]).ToArray();
            var outliers = order.Take(k).Concat(order.Skip(d - k)).ToHashSet();
            float min = float.MaxValue, max = float.MinValue;
            for (int c = 0; c < d; c++) if (!outliers.Contains(c)) { min = Math.Min(min, row[c]); max = Math.Max(max, row[c]); }
            float range = (max - min) / 2, tol = (Math.Abs((max + min) / 2) + range) * 1e-3f + 1e-5f; // f16 zero and range
            for (int c = 0; c < d; c++)
            {
                float got = dec[t * d + c];
                if (outliers.Contains(c)) Assert.Equal(KvQuantReference.F16(row[c]), got);
                else if (!codec.Spec.QNorm)
                    Assert.True(Math.Abs(row[c] - got) <= range * maxErr + tol,
                        $"t{t} c{c}: {row[c]} -> {got} (range {range})");
            }
        }
    }

    [Fact]
    public void SplitsTopAndBottomKAndKeepsThemDisjoint()
    {
        float[] x = [5, 5, 5, 5, 5, 5, 5, 5];
        Span<bool> isOut = stackalloc bool[8];
        Span<int> idx = stackalloc int[2];
        var (min, max) = TokenOutliers.Split(x, 1, isOut, idx);
        Assert.Equal(new[] { 0, 1 }, idx.ToArray()); // largest first (lowest index), then the smallest among the rest
        Assert.Equal(5f, min);
        Assert.Equal(5f, max);
        float[] y = [0.5f, -3f, 2f, 9f, -0.25f, 1f];
        Span<int> idx2 = stackalloc int[4];
        (min, max) = TokenOutliers.Split(y, 2, isOut[..6], idx2);
        Assert.Equal(new[] { 1, 2, 3, 4 }, idx2.ToArray());
        Assert.Equal(0.5f, min);
        Assert.Equal(1f, max);
    }

    [Fact]
    public void ConstantTokenDecodesExactly()
    {
        var codec = Codec("nuq3-1%", 16, 1);
        var x = Enumerable.Repeat(0.75f, 16).ToArray();
        var block = new byte[codec.BlockBytes];
        codec.EncodeToken(x, block, 0);
        var dec = new float[16];
        codec.DecodeBlock(block, 1, dec);
        Assert.All(dec, v => Assert.Equal(0.75f, v));
    }

    [Theory]
    [InlineData("nuq3-1%", 64, 1)]   // 1% of 64 over two tails rounds up to one per tail
    [InlineData("nuq3-1%", 128, 1)]
    [InlineData("nuq3-1%", 4096, 21)]
    [InlineData("nuq3-5%", 96, 3)]
    [InlineData("nuq3", 64, 0)]
    public void OutliersPerTail(string spec, int d, int k) => Assert.Equal(k, KvQuantSpec.TokenOutliersPerTail(KvQuantSpec.TryParse(spec)!.OutlierFraction, d));

    [Fact]
    public void BlockLayoutIsExact()
    {
        var codec = Codec("nuq3-1%", 64, 1);
        // 24 code bytes, f16 range + zero, two outliers (f16 + 1-byte index) per token.
        Assert.Equal(new KvBytes(32 * 24, 32 * 2, 32 * 2, 32 * 2 * 2, 32 * 2, 0), codec.BlockLayout);
        Assert.Equal(32 * 34, codec.BlockBytes);
        Assert.Equal(3 + 0.5 + 1.0 + 0.5, codec.KvQuantBitsPerElement, 9);
        var dense = Codec("nuq2", 64, 1);
        Assert.Equal(new KvBytes(32 * 16, 64, 64, 0, 0, 0), dense.BlockLayout);
    }

    [Fact]
    public void PerTokenKeysArePreRopeUnlessPost()
    {
        Assert.True(Codec("nuq3-1%:token", 64, 1, KvSide.Key).PreRope);
        Assert.False(Codec("nuq3-1%:token:post", 64, 1, KvSide.Key).PreRope);
        Assert.False(Codec("nuq3-1%:token", 64, 1, KvSide.Value).PreRope);
    }

    [Fact]
    public void TooManyOutliersForTheHeadDimIsASpecError() =>
        Assert.Throws<KvSpecException>(() => Codec("nuq3-1%", 2, 1));
}
