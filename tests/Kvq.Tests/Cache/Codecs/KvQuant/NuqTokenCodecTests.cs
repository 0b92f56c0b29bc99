using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

public class NuqTokenCodecTests
{
    private const int BlockTokens = 32;

    private static NuqTokenCodec Codec(string spec, int headDim, int seed, KvSide side = KvSide.Value, int layerBits = 0)
    {
        var s = KvQuantSpec.TryParse(spec)!;
        // A :mixed layer's codec: the spec with the width its plan chose (KvQuantSpec.ForLayers), 1 bit included.
        if (layerBits > 0) s = s with { Bits = layerBits, Allocated = true };
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
    [InlineData("nuq2-1%:qnorm", 64)]
    [InlineData("nuq2-1%:mixed:qnorm", 64, 1)]
    [InlineData("nuq2-1%:mixed:qnorm", 13, 3)]
    [InlineData("nuq2-1%:mixed", 64, 1)]
    [InlineData("nuq2-1%:margin1.1", 64)]
    [InlineData("nuq3-2%:mixed:qnorm:margin1.25", 21, 2)]
    public void DecodeMatchesReferenceAndErrorIsBounded(string spec, int d, int layerBits = 0)
    {
        var codec = Codec(spec, d, d + spec.Length + layerBits, layerBits: layerBits);
        if (layerBits > 0) Assert.Equal(layerBits, codec.Codebook.Bits);
        var x = KvQuantTestData.Activations(BlockTokens, d, seed: d * 7);
        var block = new byte[codec.BlockBytes];
        var rows = codec.HasBlockOutliers ? new BlockOutliers() : null;
        new Random(9).NextBytes(block);
        for (int t = BlockTokens - 1; t >= 0; t--) codec.EncodeToken(x.AsSpan(t * d, d), block, rows, t);
        var dec = new float[BlockTokens * d];
        codec.DecodeBlock(block, rows, BlockTokens, dec);
        var levels = codec.Codebook.DecodeLevels(codec.Spec.QNorm);
        // Q-Norm decodes level x scale + offset (the calibration's mean/std match), at every width.
        var book = codec.Codebook;
        Assert.Equal(codec.Spec.QNorm ? book.Levels.Select(l => l * book.NormScale + book.NormOffset).ToArray() : book.Levels.ToArray(), levels);
        var reference = KvQuantReference.DecodeToken(block, rows == null ? default : rows.Raw, BlockTokens, d, codec.Spec.Bits, levels, BlockTokens);
        Assert.Equal(reference, dec);
        var scalar = new float[BlockTokens * d];
        codec.DecodeBlockReference(block, rows, BlockTokens, scalar);
        Assert.Equal(reference, scalar);
        float maxErr = KvQuantReference.MaxError(codec.Codebook.Levels);
        int k = codec.OutliersPerTail;
        var stored = rows == null ? [] : KvQuantReference.Rows(rows.Raw).Select(e => e.Index).ToHashSet();
        for (int t = 0; t < BlockTokens; t++)
        {
            var row = x.AsSpan(t * d, d).ToArray();
            // Candidates: the k largest and k smallest; one is kept exactly when it lies more than the margin times the
            // rest's half-range from the rest's middle, else it joins the dense part.
            var order = Enumerable.Range(0, d).OrderBy(c => row[c]).ToArray();
            var candidates = order.Take(k).Concat(order.Skip(d - k)).ToHashSet();
            float rmin = float.MaxValue, rmax = float.MinValue;
            for (int c = 0; c < d; c++) if (!candidates.Contains(c)) { rmin = Math.Min(rmin, row[c]); rmax = Math.Max(rmax, row[c]); }
            float mid = (rmax + rmin) / 2, half = (rmax - rmin) / 2;
            var outliers = candidates.Where(c => Math.Abs(row[c] - mid) > codec.Spec.ValueMargin * half).ToHashSet();
            Assert.Equal(outliers.OrderBy(c => c), stored.Where(i => i / d == t).Select(i => i % d).OrderBy(c => c));
            float min = float.MaxValue, max = float.MinValue;
            for (int c = 0; c < d; c++) if (!outliers.Contains(c)) { min = Math.Min(min, row[c]); max = Math.Max(max, row[c]); }
            // The stored range covers the dense values around the stored zero, at most ~6% wider than (max - min) / 2.
            var (zero, range) = KvQuantReference.Scale(block, t);
            Assert.True(max - zero <= range && zero - min <= range, $"t{t}: [{min}, {max}] outside {zero} +- {range}");
            Assert.True(range <= Math.Max((max - min) / 2 * 1.07f, 1.6e-5f), $"t{t}: range {range} for half-width {(max - min) / 2}");
            for (int c = 0; c < d; c++)
            {
                float got = dec[t * d + c];
                if (outliers.Contains(c)) Assert.Equal(KvQuantReference.F16(row[c]), got);
                else if (!codec.Spec.QNorm)
                    Assert.True(Math.Abs(row[c] - got) <= range * maxErr * 1.0001f + 1e-5f,
                        $"t{t} c{c}: {row[c]} -> {got} (range {range})");
            }
        }
    }

    [Theory]
    [InlineData("nuq2-1%", 64)]
    [InlineData("nuq3-1%", 64)]
    [InlineData("nuq4-1%", 13)]
    [InlineData("nuq3", 96)]
    public void ClipNeverAddsSquaredErrorAndDecodesAsStored(string spec, int d)
    {
        var plain = Codec(spec, d, 5);
        var clip = new NuqTokenCodec(KvQuantSpec.TryParse(spec + ":clip")!, KvSide.Value, BlockTokens, d, plain.Codebook);
        var x = KvQuantTestData.Activations(BlockTokens, d, seed: d + 11);
        var rows = plain.HasBlockOutliers ? new BlockOutliers() : null;
        var clipRows = plain.HasBlockOutliers ? new BlockOutliers() : null;
        var a = new byte[plain.BlockBytes];
        var b = new byte[clip.BlockBytes];
        for (int t = 0; t < BlockTokens; t++)
        {
            plain.EncodeToken(x.AsSpan(t * d, d), a, rows, t);
            clip.EncodeToken(x.AsSpan(t * d, d), b, clipRows, t);
        }
        var da = new float[BlockTokens * d];
        var db = new float[BlockTokens * d];
        plain.DecodeBlock(a, rows, BlockTokens, da);
        clip.DecodeBlock(b, clipRows, BlockTokens, db);
        var reference = KvQuantReference.DecodeToken(b, clipRows == null ? default : clipRows.Raw, BlockTokens, d, clip.Spec.Bits,
            clip.Codebook.DecodeLevels(false), BlockTokens);
        Assert.Equal(reference, db);
        var bound = new float[BlockTokens * d];
        clip.MaxAbsError(x, bound);
        int narrower = WithinBoundsAndNoWorseThanMinMax(x, da, db, bound, d, "clip",
            t => KvQuantReference.Scale(b, t).Range < KvQuantReference.Scale(a, t).Range);
        // The search does move: some tokens of Gaussian data are better served by a narrower range.
        Assert.True(narrower > 0, "no token chose a narrower range");
    }

    /// <summary><c>:fit</c> (random seeded activations, odd head dims, 1-4 bits, with and without Q-Norm levels): every
    /// code is the plain (min/max) codec's, bit for bit, and so are the outliers; only the stored scale moves, never to
    /// more squared error than the min/max scale leaves; the block decodes as the independent reader of the documented
    /// bytes says, within <see cref="NuqTokenCodec.MaxAbsError"/>.</summary>
    [Theory]
    [InlineData("nuq2-1%", 64, 0)]
    [InlineData("nuq2-1%:qnorm", 64, 0)]
    [InlineData("nuq3-1%", 13, 0)]
    [InlineData("nuq4-1%", 67, 0)]
    [InlineData("nuq3", 96, 0)]
    [InlineData("nuq2-1%:mixed:qnorm", 21, 1)]
    [InlineData("nuq2-1%:mixed:qnorm", 64, 3)]
    public void FitKeepsEveryCodeAndNeverAddsSquaredError(string spec, int d, int layerBits)
    {
        int seed = TestSeeds.Of(nameof(FitKeepsEveryCodeAndNeverAddsSquaredError), spec, d, layerBits);
        var plain = Codec(spec, d, seed, layerBits: layerBits);
        var fs = KvQuantSpec.TryParse(spec + ":fit")!;
        if (layerBits > 0) fs = fs with { Bits = layerBits, Allocated = true };
        Assert.True(fs.Fit);
        var fit = new NuqTokenCodec(fs, KvSide.Value, BlockTokens, d, plain.Codebook);
        var x = KvQuantTestData.Activations(BlockTokens, d, seed: seed);
        var rows = plain.HasBlockOutliers ? new BlockOutliers() : null;
        var fitRows = plain.HasBlockOutliers ? new BlockOutliers() : null;
        var a = new byte[plain.BlockBytes];
        var b = new byte[fit.BlockBytes];
        new Random(seed).NextBytes(b);
        for (int t = BlockTokens - 1; t >= 0; t--)
        {
            plain.EncodeToken(x.AsSpan(t * d, d), a, rows, t);
            fit.EncodeToken(x.AsSpan(t * d, d), b, fitRows, t);
        }
        Assert.Equal(a.AsSpan(2 * BlockTokens).ToArray(), b.AsSpan(2 * BlockTokens).ToArray());
        if (rows != null) Assert.Equal(rows.Raw.ToArray(), fitRows!.Raw.ToArray());
        var levels = plain.Codebook.DecodeLevels(plain.Spec.QNorm);
        var da = new float[BlockTokens * d];
        var db = new float[BlockTokens * d];
        plain.DecodeBlock(a, rows, BlockTokens, da);
        fit.DecodeBlock(b, fitRows, BlockTokens, db);
        Assert.Equal(KvQuantReference.DecodeToken(b, fitRows == null ? default : fitRows.Raw, BlockTokens, d, fit.Spec.Bits, levels, BlockTokens), db);
        var bound = new float[BlockTokens * d];
        fit.MaxAbsError(x, bound);
        int moved = WithinBoundsAndNoWorseThanMinMax(x, da, db, bound, d, $"seed {seed}, fit",
            t => b[2 * t] != a[2 * t] || b[2 * t + 1] != a[2 * t + 1]);
        Assert.True(moved > 0, $"seed {seed}: no token moved off the min/max scale: the data does not test the fit");
    }

    /// <summary>Per token of a block decoded by a codec whose stored scale may move off the min/max one (<c>:clip</c>,
    /// <c>:fit</c>): every value within its <see cref="NuqTokenCodec.MaxAbsError"/> bound, and no more squared error
    /// than the min/max codec's decode of the same token. Returns how many tokens <paramref name="moved"/> says moved.</summary>
    private static int WithinBoundsAndNoWorseThanMinMax(float[] x, float[] minMax, float[] decoded, float[] bound, int d, string what,
        Func<int, bool> moved)
    {
        int count = 0;
        for (int t = 0; t < BlockTokens; t++)
        {
            double ea = 0, eb = 0;
            for (int c = 0; c < d; c++)
            {
                int i = t * d + c;
                ea += (x[i] - minMax[i]) * (double)(x[i] - minMax[i]);
                eb += (x[i] - decoded[i]) * (double)(x[i] - decoded[i]);
                Assert.True(Math.Abs(x[i] - decoded[i]) <= bound[i] * 1.0001f + 1e-6f, $"{what}: t{t} c{c}: {x[i]} -> {decoded[i]}, bound {bound[i]}");
            }
            Assert.True(eb <= ea * (1 + 1e-5) + 1e-9, $"{what}: t{t}: error {eb} > min/max error {ea}");
            if (moved(t)) count++;
        }
        return count;
    }

    [Theory]
    [InlineData(0f, 0f)]
    [InlineData(-1f, 1f)]
    [InlineData(3.25f, 3.5f)]
    [InlineData(-1000f, -990f)]
    [InlineData(1e-7f, 2e-7f)]
    [InlineData(0.1f, 60000f)]
    public void TokenScaleCoversItsInterval(float min, float max)
    {
        var (packed, zero, range) = TokenScale.Encode(min, max);
        Assert.Equal((zero, range), TokenScale.Decode(packed));
        Assert.True(max - zero <= range && zero - min <= range, $"[{min}, {max}] outside {zero} +- {range}");
        // Smallest range code that covers (one code less does not, unless at the bottom of the scale).
        int r = packed & 1023;
        if (r > 0) Assert.True(TokenScale.Range(r - 1) < (max - min) / 2 * 1.0001f || Math.Abs((max + min) / 2) > 1.9f * TokenScale.Range(r - 1),
            $"code {r} could be {r - 1}");
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
        var rows = new BlockOutliers();
        codec.EncodeToken(x, block, rows, 0);
        var dec = new float[16];
        codec.DecodeBlock(block, rows, 1, dec);
        // Every value decodes alike, within the stated bound (the 6-bit zero reaches +-2 ranges, so a constant far from
        // zero gets a range of about a third of its value: exact no longer, bounded still).
        Assert.All(dec, v => Assert.Equal(dec[0], v));
        var bound = new float[16];
        codec.MaxAbsError(x, bound);
        Assert.True(Math.Abs(dec[0] - 0.75f) <= bound[0], $"{dec[0]} vs 0.75, bound {bound[0]}");
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
        // 24 code bytes and a 16-bit packed zero/range per token; outliers in sparse rows beside the block.
        Assert.Equal(new KvBytes(32 * 24, 32 * 2, 0, 0, 0, 0), codec.BlockLayout);
        Assert.Equal(32 * 26, codec.BlockBytes);
        Assert.True(codec.HasBlockOutliers);
        Assert.Equal(3 + 0.25 + 0.01 * 27 + 24.0 / 2048, codec.KvQuantBitsPerElement, 9);
        var dense = Codec("nuq2", 64, 1);
        Assert.Equal(new KvBytes(32 * 16, 64, 0, 0, 0, 0), dense.BlockLayout);
        Assert.False(dense.HasBlockOutliers);
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
