using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

public class NuqChannelCodecTests
{
    private const int BlockTokens = 32;

    /// <summary>A key codec on random scales and a random codebook (any head dim, odd ones included).</summary>
    private static NuqChannelCodec Codec(string spec, int headDim, int seed, out float[] zero, out float[] range, int layerBits = 0)
    {
        var s = KvQuantSpec.TryParse(spec)!;
        // A :mixed layer's codec: the spec with the width its plan chose (KvQuantSpec.ForLayers), 1 bit included.
        if (layerBits > 0) s = s with { Bits = layerBits, Allocated = true };
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
    [InlineData("nuq2-1%:mixed:qnorm", 64, 1)]
    [InlineData("nuq2-1%:mixed:qnorm", 13, 3)]
    [InlineData("nuq2-1%:mixed", 64, 1)]
    public void DecodeMatchesReferenceAndErrorIsBounded(string spec, int d, int layerBits = 0)
    {
        var codec = Codec(spec, d, d * 31 + spec.Length + layerBits, out var zero, out var range, layerBits);
        if (layerBits > 0) Assert.Equal(layerBits, codec.Codebook.Bits);
        var x = Tokens(BlockTokens, zero, range, d, outlierRate: 0.01);
        var block = new byte[codec.BlockBytes];
        var rows = codec.HasBlockOutliers ? new BlockOutliers() : null;
        new Random(5).NextBytes(block); // stale bytes of a reused block must not leak through
        // Tokens in scrambled order, a few written twice (the second write replaces the first's outliers).
        var order = Enumerable.Range(0, BlockTokens).OrderBy(t => (t * 37 + 11) % BlockTokens).ToArray();
        var noise = Tokens(BlockTokens, zero, range, d + 1, outlierRate: 0.2);
        foreach (int t in order.Take(6)) codec.EncodeToken(noise.AsSpan(t * d, d), block, rows, t);
        foreach (int t in order) codec.EncodeToken(x.AsSpan(t * d, d), block, rows, t);
        var dec = new float[BlockTokens * d];
        codec.DecodeBlock(block, rows, BlockTokens, dec);
        var levels = codec.Codebook.DecodeLevels(codec.Spec.QNorm);
        // Q-Norm decodes level x scale + offset (the calibration's mean/std match), at every width.
        var book = codec.Codebook;
        Assert.Equal(codec.Spec.QNorm ? book.Levels.Select(l => l * book.NormScale + book.NormOffset).ToArray() : book.Levels.ToArray(), levels);
        var reference = KvQuantReference.DecodeChannel(block, rows == null ? default : rows.Raw, d, codec.Spec.Bits, zero, range, levels, BlockTokens);
        Assert.Equal(reference, dec);
        var scalar = new float[BlockTokens * d];
        codec.DecodeBlockReference(block, rows, BlockTokens, scalar);
        Assert.Equal(reference, scalar);
        // Partial decode agrees with the full one.
        var part = new float[5 * d];
        codec.DecodeBlock(block, rows, 5, part);
        Assert.Equal(dec.AsSpan(0, 5 * d).ToArray(), part);

        float maxErr = KvQuantReference.MaxError(codec.Codebook.Levels);
        var encLevels = codec.Codebook.Levels;
        int cb = NuqBits.Bytes(d, codec.Spec.Bits), codesAt = 0;
        for (int t = 0; t < BlockTokens; t++)
        {
            var codes = block.AsSpan(codesAt + t * cb, cb);
            for (int c = 0; c < d; c++)
            {
                float xv = x[t * d + c], u = (xv - zero[c]) / range[c];
                float got = dec[t * d + c];
                if (u > 1 || u < -1)
                {
                    // With an outlier fraction every value past the thresholds is stored exactly: nothing is clamped.
                    if (codec.Spec.HasOutliers) { Assert.Equal(KvQuantReference.F16(xv), got); continue; }
                }
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
    public void EveryOutlierIsKeptExactlyHoweverManyATokenHas()
    {
        const int d = 64;
        var codec = Codec("nuq3-1%", d, 4, out var zero, out var range);
        var block = new byte[codec.BlockBytes];
        var rows = new BlockOutliers();
        var x = new float[d];
        for (int c = 0; c < d; c++) x[c] = zero[c] + range[c] * 0.5f;
        // 40 of 64 channels past the thresholds in one token (fixed slots used to keep 3 and clamp the rest).
        var outs = Enumerable.Range(0, 40).Select(i => (C: i * 3 % d + (i * 3 >= d ? 1 : 0), U: (i % 2 == 0 ? 1 : -1) * (1.5f + i))).ToArray();
        foreach (var (c, u) in outs) x[c] = zero[c] + range[c] * u;
        int n = outs.Select(o => o.C).Distinct().Count();
        codec.EncodeToken(x, block, rows, 3);
        var dec = new float[4 * d];
        codec.DecodeBlock(block, rows, 4, dec);
        foreach (var (c, _) in outs) Assert.Equal(KvQuantReference.F16(x[c]), dec[3 * d + c]);
        Assert.Equal(n, rows.Count);
        Assert.Equal(n, rows.TokenCount(3, d));
        Assert.Equal(0, rows.TokenCount(2, d));
        // Rewriting the token with no outliers empties its rows.
        for (int c = 0; c < d; c++) x[c] = zero[c] + range[c] * 0.25f;
        codec.EncodeToken(x, block, rows, 3);
        Assert.Equal(0, rows.Count);
        Assert.Equal(0, rows.Bytes);
    }

    [Fact]
    public void SparseRowsAreCompressedSparseRowsOfTheBlock()
    {
        const int d = 64;
        var codec = Codec("nuq2-1%", d, 8, out var zero, out var range);
        var block = new byte[codec.BlockBytes];
        var rows = new BlockOutliers();
        var x = Tokens(BlockTokens, zero, range, 21, outlierRate: 0.02);
        for (int t = BlockTokens - 1; t >= 0; t--) codec.EncodeToken(x.AsSpan(t * d, d), block, rows, t);
        var entries = KvQuantReference.Rows(rows.Raw);
        // Sorted by (token, channel), exactly the values past the thresholds, 11-bit indices (32 x 64 = 2^11).
        Assert.Equal(11, rows.IndexBits);
        var expected = new List<int>();
        for (int i = 0; i < x.Length; i++)
        {
            float u = (x[i] - zero[i % d]) / range[i % d];
            if (u > 1 || u < -1) expected.Add(i);
        }
        Assert.NotEmpty(expected);
        Assert.Equal(expected, entries.Select(e => e.Index));
        Assert.All(entries, e => Assert.Equal(KvQuantReference.F16(x[e.Index]), e.Value));
        // Bytes: 3-byte header + 27 bits per entry, rounded up to 8 bytes.
        long bytes = (3 + (expected.Count * 27 + 7) / 8 + 7) / 8 * 8;
        Assert.Equal(bytes, rows.Bytes);
    }

    [Theory]
    [InlineData("nuq4-1%", 64, 32 * 32, 0, 0, 0, 0)]
    [InlineData("nuq3-1%", 64, 32 * 24, 0, 0, 0, 0)]
    [InlineData("nuq2-1%", 64, 32 * 16, 0, 0, 0, 0)]
    [InlineData("nuq3", 64, 32 * 24, 0, 0, 0, 0)]
    [InlineData("nuq3-0.5%", 96, 32 * 36, 0, 0, 0, 0)]
    [InlineData("nuq3-1%", 300, 32 * 113, 0, 0, 0, 0)]
    public void BlockLayoutIsExact(string spec, int d, long codes, long scales, long zeros, long outliers, long indices)
    {
        var codec = Codec(spec, d, 1, out _, out _);
        Assert.Equal(new KvBytes(codes, scales, zeros, outliers, indices, 0), codec.BlockLayout);
        Assert.Equal(codes + scales + zeros + outliers + indices, codec.BlockBytes);
    }

    [Fact]
    public void KvQuantAccountingMatchesThePaperAtItsGeometry()
    {
        // 4096-value vectors in blocks of 32 tokens: 2^17 positions, 17-bit indices; 3 + 0.01 x 33 + 24/131072 bits.
        Assert.Equal(3 + 0.33 + 24.0 / 131072, KvQuantAccounting.PerChannel(3, 0.01, 4096, 32), 9);
        Assert.Equal(3, KvQuantAccounting.PerChannel(3, 0, 4096, 32));
        var codec = Codec("nuq3-1%", 64, 1, out _, out _);
        Assert.Equal(3 + 0.01 * 27 + 24.0 / 2048, codec.KvQuantBitsPerElement, 9);
        Assert.Equal(3 + 0.01 * 2048 * 27 / 8.0, codec.ExpectedOutlierBytesPerBlock, 9);
    }

    [Fact]
    public void RejectsBadUse()
    {
        var codec = Codec("nuq3-1%", 64, 1, out _, out _);
        var block = new byte[codec.BlockBytes];
        var rows = new BlockOutliers();
        Assert.Throws<ArgumentException>(() => codec.EncodeToken(new float[63], block, rows, 0));
        Assert.Throws<ArgumentException>(() => codec.EncodeToken(new float[64], block, rows, BlockTokens));
        Assert.Throws<ArgumentException>(() => codec.DecodeBlock(block.AsSpan(1), rows, 1, new float[64]));
        Assert.Throws<ArgumentException>(() => codec.DecodeBlock(block, rows, 2, new float[64]));
        // Without the block's sparse rows a format with outliers refuses rather than drop them.
        var e = Assert.Throws<ArgumentException>(() => codec.EncodeToken(new float[64], block, 0));
        Assert.Contains("BlockOutliers", e.Message);
        Assert.Throws<ArgumentException>(() => codec.DecodeBlock(block, 1, new float[64]));
    }
}
