using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

public class NuqChannelCodecTests
{
    private const int BlockTokens = 32;

    /// <summary>A key codec on random scales and a random codebook (any head dim, odd ones included).</summary>
    private static NuqChannelCodec Codec(string spec, int headDim, int seed, out float[] zero, out float[] range)
    {
        var s = KvQuantSpec.TryParse(spec)!;
        var rng = new Random(seed);
        zero = new float[headDim];
        range = new float[headDim];
        for (int c = 0; c < headDim; c++)
        {
            zero[c] = (float)(rng.NextDouble() * 4 - 2);
            range[c] = 0.1f + (float)rng.NextDouble() * 3;
        }
        var levels = new float[1 << s.Bits];
        for (int i = 0; i < levels.Length; i++) levels[i] = -1f + 2f * (i + (float)(rng.NextDouble() * 0.8 - 0.4)) / (levels.Length - 1);
        Array.Sort(levels);
        var book = s.Uniform ? NuqCodebook.Uniform(s.Bits) : new NuqCodebook(levels, 0.97f, 0.01f);
        return new NuqChannelCodec(s, KvSide.Key, BlockTokens, headDim, zero, range, book);
    }

    /// <summary>Tokens around the channel scales: mostly inside [-1, 1] after normalization, some far outside.</summary>
    private static float[] Tokens(int n, float[] zero, float[] range, int seed, double outlierRate)
    {
        var rng = new Random(seed);
        int d = zero.Length;
        var x = new float[n * d];
        for (int t = 0; t < n; t++)
            for (int c = 0; c < d; c++)
            {
                double u = rng.NextDouble() * 2 - 1;
                if (rng.NextDouble() < outlierRate) u = (rng.NextDouble() < 0.5 ? -1 : 1) * (1.05 + rng.NextDouble() * 5);
                float v = zero[c] + range[c] * (float)u;
                x[t * d + c] = v == 0 ? 1e-3f : v;
            }
        return x;
    }

    [Theory]
    [InlineData("nuq4-1%", 64)]
    [InlineData("nuq3-1%", 64)]
    [InlineData("nuq2-1%", 64)]
    [InlineData("nuq3-0.5%", 96)]
    [InlineData("nuq3-1%", 8)]
    [InlineData("nuq3-1%", 13)]
    [InlineData("nuq2-1%", 5)]
    [InlineData("nuq4-1%", 300)]
    [InlineData("nuq3", 64)]
    [InlineData("nuq3-1%:uniform", 96)]
    [InlineData("nuq2-1%:qnorm", 64)]
    public void DecodeMatchesReferenceAndErrorIsBounded(string spec, int d)
    {
        var codec = Codec(spec, d, d * 31 + spec.Length, out var zero, out var range);
        var x = Tokens(BlockTokens, zero, range, d, outlierRate: 0.01);
        var block = new byte[codec.BlockBytes];
        new Random(5).NextBytes(block); // stale bytes of a reused block must not leak through
        for (int t = 0; t < BlockTokens; t++) codec.EncodeToken(x.AsSpan(t * d, d), block, t);
        var dec = new float[BlockTokens * d];
        codec.DecodeBlock(block, BlockTokens, dec);
        var levels = codec.Codebook.DecodeLevels(codec.Spec.QNorm);
        var reference = KvQuantReference.DecodeChannel(block, BlockTokens, d, codec.Spec.Bits, codec.OutlierSlots, zero, range, levels, BlockTokens);
        Assert.Equal(reference, dec);
        // Partial decode agrees with the full one.
        var part = new float[5 * d];
        codec.DecodeBlock(block, 5, part);
        Assert.Equal(dec.AsSpan(0, 5 * d).ToArray(), part);

        float maxErr = KvQuantReference.MaxError(codec.Codebook.Levels);
        var encLevels = codec.Codebook.Levels;
        int cb = NuqBits.Bytes(d, codec.Spec.Bits), codesAt = BlockTokens * codec.OutlierSlots * 2;
        for (int t = 0; t < BlockTokens; t++)
        {
            var codes = block.AsSpan(codesAt + t * cb, cb);
            for (int c = 0; c < d; c++)
            {
                float xv = x[t * d + c], u = (xv - zero[c]) / range[c];
                float got = dec[t * d + c];
                if (got == KvQuantReference.F16(xv) && (u > 1 || u < -1)) continue; // stored exactly
                // Dense: the nearest level (brute force agrees up to exact ties), error within the codebook's bound.
                int code = KvQuantReference.Code(codes, c, codec.Spec.Bits);
                int nearest = KvQuantReference.Nearest(u, encLevels);
                if (code != nearest) Assert.Equal(Math.Abs(u - encLevels[nearest]), Math.Abs(u - encLevels[code]), 5);
                if (u <= 1 && u >= -1 && !codec.Spec.QNorm)
                    Assert.True(Math.Abs(xv - got) <= range[c] * maxErr * 1.0001f + 1e-5f, $"t{t} c{c}: {xv} -> {got}");
            }
        }
    }

    [Fact]
    public void OutliersAreExactWhileSlotsLast()
    {
        const int d = 64;
        var codec = Codec("nuq3-1%", d, 3, out var zero, out var range);
        Assert.Equal(KvQuantSpec.KeyOutlierSlots(0.01, d), codec.OutlierSlots);
        Assert.Equal(3, codec.OutlierSlots);
        var block = new byte[codec.BlockBytes];
        var x = new float[d];
        for (int c = 0; c < d; c++) x[c] = zero[c] + range[c] * 0.3f * ((c % 3) - 1 + 0.1f);
        int[] outlierChannels = [5, 17, 63];
        foreach (int c in outlierChannels) x[c] = zero[c] + range[c] * (c == 17 ? -7.25f : 3.5f);
        codec.EncodeToken(x, block, 4);
        var dec = new float[5 * d];
        codec.DecodeBlock(block, 5, dec);
        foreach (int c in outlierChannels) Assert.Equal(KvQuantReference.F16(x[c]), dec[4 * d + c]);
        Assert.Equal(3, codec.Counters.Outliers);
        Assert.Equal(0, codec.Counters.Clamped);
    }

    [Fact]
    public void OverflowKeepsTheLargestAndClampsTheRest()
    {
        const int d = 64;
        var codec = Codec("nuq3-1%", d, 4, out var zero, out var range);
        var block = new byte[codec.BlockBytes];
        var x = new float[d];
        for (int c = 0; c < d; c++) x[c] = zero[c] + range[c] * 0.5f;
        // Six outliers, three slots: |u| of 2, 9, 3, 8, 1.5, 7 -> channels with 9, 8, 7 keep exact values.
        (int C, float U)[] outs = [(1, 2f), (10, -9f), (20, 3f), (30, 8f), (40, -1.5f), (50, 7f)];
        foreach (var (c, u) in outs) x[c] = zero[c] + range[c] * u;
        codec.EncodeToken(x, block, 0);
        var dec = new float[d];
        codec.DecodeBlock(block, 1, dec);
        var levels = codec.Codebook.DecodeLevels(codec.Spec.QNorm);
        foreach (var (c, u) in outs)
        {
            if (Math.Abs(u) >= 7) Assert.Equal(KvQuantReference.F16(x[c]), dec[c]);
            else Assert.Equal(zero[c] + range[c] * (u > 0 ? levels[^1] : levels[0]), dec[c]); // clamped to the extreme level
        }
        Assert.Equal(3, codec.Counters.Outliers);
        Assert.Equal(3, codec.Counters.Clamped);
    }

    [Theory]
    [InlineData("nuq4-1%", 64, 32 * 32, 0, 0, 32 * 3 * 2, 32 * 3)]
    [InlineData("nuq3-1%", 64, 32 * 24, 0, 0, 32 * 3 * 2, 32 * 3)]
    [InlineData("nuq2-1%", 64, 32 * 16, 0, 0, 32 * 3 * 2, 32 * 3)]
    [InlineData("nuq3", 64, 32 * 24, 0, 0, 0, 0)]
    [InlineData("nuq3-0.5%", 96, 32 * 36, 0, 0, 32 * 2 * 2, 32 * 2)]
    [InlineData("nuq3-1%", 300, 32 * 113, 0, 0, 32 * 7 * 2, 32 * 7 * 2)]
    [InlineData("nuq3-1%:slots5", 64, 32 * 24, 0, 0, 32 * 5 * 2, 32 * 5)]
    public void BlockLayoutIsExact(string spec, int d, long codes, long scales, long zeros, long outliers, long indices)
    {
        var codec = Codec(spec, d, 1, out _, out _);
        Assert.Equal(new KvBytes(codes, scales, zeros, outliers, indices, 0), codec.BlockLayout);
        Assert.Equal(codes + scales + zeros + outliers + indices, codec.BlockBytes);
    }

    [Fact]
    public void KvQuantAccountingMatchesThePaperAtItsGeometry()
    {
        // Head dim 128 x 32 heads = 4096-value vectors: 3 + 0.32 + 32/4096 bits for nuq3-1% keys.
        Assert.Equal(3.3278, KvQuantAccounting.PerChannel(3, 0.01, 4096), 4);
        Assert.Equal(3, KvQuantAccounting.PerChannel(3, 0, 4096));
        var codec = Codec("nuq3-1%", 64, 1, out _, out _);
        Assert.Equal(3 + 0.32 + 0.5, codec.KvQuantBitsPerElement, 9);
    }

    [Fact]
    public void RejectsBadUse()
    {
        var codec = Codec("nuq3-1%", 64, 1, out _, out _);
        var block = new byte[codec.BlockBytes];
        Assert.Throws<ArgumentException>(() => codec.EncodeToken(new float[63], block, 0));
        Assert.Throws<ArgumentException>(() => codec.EncodeToken(new float[64], block, BlockTokens));
        Assert.Throws<ArgumentException>(() => codec.DecodeBlock(block.AsSpan(1), 1, new float[64]));
        Assert.Throws<ArgumentException>(() => codec.DecodeBlock(block, 2, new float[64]));
    }
}
