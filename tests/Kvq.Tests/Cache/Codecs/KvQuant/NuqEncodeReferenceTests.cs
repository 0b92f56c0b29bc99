using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Xunit.Abstractions;
using static Kvq.Tests.Cache.Codecs.KvQuant.TokenScaleReference;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// The nuq encoders against a plain restatement of what they are documented to write (written for the codecs'
/// mutation run: the decode tests compare DecodeBlock with a reference decode of whatever bytes the encoder wrote, and
/// bound the error, which a slightly wrong scale, code or outlier choice can still meet). Per token (values): the k
/// largest then the k smallest values are candidates, a candidate further than the margin times the rest's half-range
/// from the rest's middle is kept exactly, the smallest log range (2^(r/32 - 16)) whose interval around the rounded
/// zero (a multiple of range/16 in 6 signed bits) holds the rest, and each value's nearest level (ties to the lower).
/// Per channel (keys): the profile's zero and range, the nearest level, and every value whose normalized value lies
/// outside [-1, 1] kept exactly. Codes packed little-endian bit by bit, padding zero; sparse entries sorted by index.
/// Random seeded data written slot by slot in a shuffled order into blocks that start as random bytes; the block and
/// its sparse rows must equal the reference's bit for bit.
/// </summary>
public class NuqEncodeReferenceTests(ITestOutputHelper output)
{
    private static NuqCodebook Book(int bits, bool uniform, Random rng)
    {
        if (uniform) return NuqCodebook.Uniform(bits);
        var levels = new float[1 << bits];
        for (int i = 0; i < levels.Length; i++) levels[i] = -1f + 2f * (i + (float)(rng.NextDouble() * 0.8 - 0.4)) / (levels.Length - 1);
        Array.Sort(levels);
        return new NuqCodebook(levels, 1.03f, -0.02f);
    }

    /// <summary>Nearest level by distance (ties to the lower level), of the codebook's levels as the encoder sees them:
    /// the midpoints are computed in f32, so a tie is a value equal to the f32 midpoint.</summary>
    /// <summary>Squared error, in double, of <paramref name="values"/> decoded at their nearest levels under range code
    /// <paramref name="r"/> and zero step <paramref name="z"/> (the <c>:clip</c> search's measure).</summary>
    private static double ScaleError(float[] values, int r, int z, float[] levels)
    {
        float range = RangeOf(r), zero = z * (range / 16);
        double e = 0;
        foreach (float v in values)
        {
            double dv = zero + range * levels[Nearest((v - zero) / range, levels)] - (double)v;
            e += dv * dv;
        }
        return e;
    }

    private static int Nearest(float u, float[] levels)
    {
        int code = 0;
        for (int i = 0; i + 1 < levels.Length; i++)
            if (u > (levels[i] + levels[i + 1]) * 0.5f) code = i + 1;
        return code;
    }

    private static void PutCodes(byte[] block, int offset, int[] codes, int bits)
    {
        int bytes = (codes.Length * bits + 7) / 8;
        Array.Clear(block, offset, bytes);
        for (int i = 0; i < codes.Length; i++)
            for (int b = 0; b < bits; b++)
                if ((codes[i] >> b & 1) != 0) block[offset + (i * bits + b) / 8] |= (byte)(1 << ((i * bits + b) % 8));
    }

    private static int[] Shuffled(int n, Random rng)
    {
        var order = Enumerable.Range(0, n).ToArray();
        rng.Shuffle(order);
        return order;
    }

    [Theory]
    [InlineData("nuq4-1%", 64, 32)]
    [InlineData("nuq3-1%", 13, 31)]
    [InlineData("nuq2-1%", 67, 7)]
    [InlineData("nuq3-5%", 96, 17)]
    [InlineData("nuq4-10%", 21, 9)]
    [InlineData("nuq3", 40, 11)]
    [InlineData("nuq2-1%:uniform", 9, 5)]
    [InlineData("nuq3-1%:qnorm", 64, 16)]
    [InlineData("nuq2-1%:margin1.2", 67, 7)]
    [InlineData("nuq3-3%:margin2.5", 13, 31)]
    public void PerTokenBlocksAreWhatTheSchemeWrites(string spec, int d, int blockTokens)
    {
        int seed = TestSeeds.Of(nameof(PerTokenBlocksAreWhatTheSchemeWrites), spec, d, blockTokens);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var s = KvQuantSpec.TryParse(spec)!;
        var book = Book(s.Bits, s.Uniform, rng);
        var codec = new NuqTokenCodec(s, KvSide.Value, blockTokens, d, book);
        var x = KvQuantTestData.Activations(blockTokens, d, seed);
        // A few tokens with exact repeats, a constant token and one far from zero (the 6-bit zero clamps).
        for (int c = 0; c < d; c += 3) x[c] = x[1];
        if (blockTokens > 2) for (int c = 0; c < d; c++) x[2 * d + c] = 0.37f;
        if (blockTokens > 3) for (int c = 0; c < d; c++) x[3 * d + c] = 500f + (float)rng.NextDouble();
        var block = new byte[codec.BlockBytes];
        rng.NextBytes(block);
        var rows = codec.HasBlockOutliers ? new BlockOutliers() : null;
        foreach (int t in Shuffled(blockTokens, rng)) codec.EncodeToken(x.AsSpan(t * d, d), block, rows, t);

        int k = KvQuantSpec.TokenOutliersPerTail(s.OutlierFraction, d), cb = (d * s.Bits + 7) / 8;
        Assert.Equal(k, codec.OutliersPerTail);
        var expected = new byte[codec.BlockBytes];
        var entries = new List<(int Index, ushort Half)>();
        int kept = 0;
        for (int t = 0; t < blockTokens; t++)
        {
            var row = x.AsSpan(t * d, d).ToArray();
            var candidate = new bool[d];
            for (int j = 0; j < 2 * k; j++)
            {
                int best = -1;
                for (int c = 0; c < d; c++)
                    if (!candidate[c] && (best < 0 || (j < k ? row[c] > row[best] : row[c] < row[best]))) best = c;
                candidate[best] = true;
            }
            float rmin = float.PositiveInfinity, rmax = float.NegativeInfinity;
            for (int c = 0; c < d; c++) if (!candidate[c]) { rmin = Math.Min(rmin, row[c]); rmax = Math.Max(rmax, row[c]); }
            float mid = (rmax + rmin) * 0.5f, half = (rmax - rmin) * 0.5f;
            var outlier = new bool[d];
            for (int c = 0; c < d; c++) outlier[c] = candidate[c] && Math.Abs(row[c] - mid) > s.ValueMargin * half;
            float min = float.PositiveInfinity, max = float.NegativeInfinity;
            for (int c = 0; c < d; c++) if (!outlier[c]) { min = Math.Min(min, row[c]); max = Math.Max(max, row[c]); }
            var (r, z) = Smallest(min, max);
            float range = RangeOf(r), zero = z * (range / 16);
            int packed = r | (z & 63) << 10;
            expected[2 * t] = (byte)packed;
            expected[2 * t + 1] = (byte)(packed >> 8);
            var codes = new int[d];
            for (int c = 0; c < d; c++) codes[c] = Nearest((row[c] - zero) / range, book.Levels);
            PutCodes(expected, 2 * blockTokens + t * cb, codes, s.Bits);
            for (int c = 0; c < d; c++)
                if (outlier[c]) { entries.Add((t * d + c, BitConverter.HalfToUInt16Bits((Half)row[c]))); kept++; }
        }
        Assert.Equal(expected, block);
        if (rows == null) Assert.Equal(0, k);
        else
        {
            var got = Enumerable.Range(0, rows.Count).Select(rows.Entry).ToArray();
            Assert.Equal(entries, got);
            Assert.Equal(BlockOutliers.IndexBitsFor(blockTokens, d), rows.IndexBits);
        }
        output.WriteLine($"{kept} outliers kept of {2 * k * blockTokens} candidates");
        if (k > 0) Assert.True(kept > 0, "no candidate was kept: the data does not test the margin");
    }

    [Theory]
    [InlineData("nuq4-1%", 64, 32)]
    [InlineData("nuq3-1%", 13, 31)]
    [InlineData("nuq2-1%", 67, 7)]
    [InlineData("nuq3-0.5%", 96, 17)]
    [InlineData("nuq3", 40, 11)]
    [InlineData("nuq4-1%:uniform", 9, 5)]
    [InlineData("nuq2-1%:qnorm", 64, 16)]
    public void PerChannelBlocksAreWhatTheSchemeWrites(string spec, int d, int blockTokens)
    {
        int seed = TestSeeds.Of(nameof(PerChannelBlocksAreWhatTheSchemeWrites), spec, d, blockTokens);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var s = KvQuantSpec.TryParse(spec)!;
        var book = Book(s.Bits, s.Uniform, rng);
        var zero = new float[d];
        var range = new float[d];
        for (int c = 0; c < d; c++)
        {
            zero[c] = (float)(rng.NextDouble() * 4 - 2);
            range[c] = 0.1f + (float)rng.NextDouble() * 3;
        }
        var codec = new NuqChannelCodec(s, KvSide.Key, blockTokens, d, zero, range, book);
        var x = new float[blockTokens * d];
        for (int i = 0; i < x.Length; i++)
        {
            int c = i % d;
            double u = rng.NextDouble() * 2.2 - 1.1;             // some just outside [-1, 1]
            if (rng.NextDouble() < 0.03) u *= 1 + rng.NextDouble() * 4;
            x[i] = zero[c] + range[c] * (float)u;
        }
        // Exactly on the edges: u = +-1 stays dense.
        x[0] = zero[0] + range[0];
        x[1] = zero[1] - range[1];
        var block = new byte[codec.BlockBytes];
        rng.NextBytes(block);
        var rows = codec.HasBlockOutliers ? new BlockOutliers() : null;
        foreach (int t in Shuffled(blockTokens, rng)) codec.EncodeToken(x.AsSpan(t * d, d), block, rows, t);

        int cb = (d * s.Bits + 7) / 8;
        var expected = new byte[codec.BlockBytes];
        var entries = new List<(int Index, ushort Half)>();
        for (int t = 0; t < blockTokens; t++)
        {
            var codes = new int[d];
            for (int c = 0; c < d; c++)
            {
                float u = (x[t * d + c] - zero[c]) / range[c];
                codes[c] = Nearest(u, book.Levels);
                if (s.HasOutliers && Math.Abs(u) > 1f) entries.Add((t * d + c, BitConverter.HalfToUInt16Bits((Half)x[t * d + c])));
            }
            PutCodes(expected, t * cb, codes, s.Bits);
        }
        Assert.Equal(expected, block);
        if (rows == null) Assert.False(s.HasOutliers);
        else
        {
            Assert.Equal(entries, Enumerable.Range(0, rows.Count).Select(rows.Entry).ToArray());
            Assert.NotEmpty(entries);
        }
        output.WriteLine($"{entries.Count} outliers");
    }

    /// <summary><c>:clip</c>: each token's stored scale is, among the documented candidates (the min/max scale's range
    /// code and the 16 below it, each with the zero rounded to the dense values' middle and its two neighbours, clamped
    /// to 6 bits), one whose decoded dense values have the least squared error (computed here in double); the codes
    /// are the nearest levels under that scale.</summary>
    [Theory]
    [InlineData("nuq2-1%:clip", 64, 16)]
    [InlineData("nuq3-1%:clip", 13, 9)]
    [InlineData("nuq4:clip", 40, 7)]
    [InlineData("nuq3-5%:clip", 96, 5)]
    public void ClipPicksTheBestCandidateScale(string spec, int d, int blockTokens)
    {
        int seed = TestSeeds.Of(nameof(ClipPicksTheBestCandidateScale), spec, d, blockTokens);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var s = KvQuantSpec.TryParse(spec)!;
        var book = Book(s.Bits, false, rng);
        var codec = new NuqTokenCodec(s, KvSide.Value, blockTokens, d, book);
        var plain = new NuqTokenCodec(KvQuantSpec.TryParse(spec.Replace(":clip", ""))!, KvSide.Value, blockTokens, d, book);
        var x = KvQuantTestData.Activations(blockTokens, d, seed);
        var block = new byte[codec.BlockBytes];
        var plainBlock = new byte[codec.BlockBytes];
        var rows = codec.HasBlockOutliers ? new BlockOutliers() : null;
        var plainRows = codec.HasBlockOutliers ? new BlockOutliers() : null;
        for (int t = 0; t < blockTokens; t++)
        {
            codec.EncodeToken(x.AsSpan(t * d, d), block, rows, t);
            plain.EncodeToken(x.AsSpan(t * d, d), plainBlock, plainRows, t);
        }
        var outlierIndex = rows == null ? new HashSet<int>() : Enumerable.Range(0, rows.Count).Select(i => rows.Entry(i).Index).ToHashSet();
        int cb = (d * s.Bits + 7) / 8, moved = 0;
        for (int t = 0; t < blockTokens; t++)
        {
            var dense = Enumerable.Range(0, d).Where(c => !outlierIndex.Contains(t * d + c)).Select(c => x[t * d + c]).ToArray();
            double Error(int r, int z) => ScaleError(dense, r, z, book.Levels);
            int minMax = plainBlock[2 * t] | plainBlock[2 * t + 1] << 8, rc = minMax & 1023;
            float mid = (dense.Max() + dense.Min()) * 0.5f;
            double best = Error(rc, (minMax >> 10) >= 32 ? (minMax >> 10) - 64 : minMax >> 10);
            var candidates = new HashSet<int> { minMax };
            for (int r = rc - 1; r >= Math.Max(0, rc - 16); r--)
            {
                int zc = (int)MathF.Round(mid / (RangeOf(r) / 16));
                for (int dz = -1; dz <= 1; dz++)
                {
                    int z = Math.Clamp(zc + dz, -32, 31);
                    candidates.Add(r | (z & 63) << 10);
                    best = Math.Min(best, Error(r, z));
                }
            }
            int packed = block[2 * t] | block[2 * t + 1] << 8;
            Assert.Contains(packed, candidates);
            int pz = (packed >> 10) >= 32 ? (packed >> 10) - 64 : packed >> 10;
            double got = Error(packed & 1023, pz);
            Assert.True(got <= best * (1 + 1e-5) + 1e-12, $"t{t}: scale {packed:x4} leaves {got}, a candidate leaves {best}");
            if (packed != minMax) moved++;
            float gr = RangeOf(packed & 1023), gz = pz * (gr / 16);
            var codes = new int[d];
            for (int c = 0; c < d; c++) codes[c] = Nearest((x[t * d + c] - gz) / gr, book.Levels);
            var expected = new byte[cb];
            PutCodes(expected, 0, codes, s.Bits);
            Assert.Equal(expected, block.AsSpan(2 * blockTokens + t * cb, cb).ToArray());
        }
        output.WriteLine($"{moved} of {blockTokens} tokens moved off the min/max scale");
        Assert.True(moved > 0, "no token moved off the min/max scale: the data does not test the search");
    }
    /// <summary>The <c>:clip</c> search reaches both ends of its candidates: on tokens made of a tight cluster and one or
    /// two far values (the narrowest candidate, 16 range codes below the min/max one, often wins there) and plain
    /// Gaussian ones, every token's scale is a candidate with the least error, and where one candidate is better than
    /// every other by 0.1% it is exactly the one chosen; among those, the narrowest range, the zero one step below the
    /// middle and one step above each win somewhere (a search that stops a code early or skips a zero neighbour fails
    /// there; <see cref="ClipPicksTheBestCandidateScale"/>'s random data did not decide these).</summary>
    [Theory]
    [InlineData("nuq3:clip", 32, false)]
    [InlineData("nuq2:clip", 24, true)]
    [InlineData("nuq2:clip", 17, false)]
    public void ClipSearchReachesEveryEdgeOfItsCandidates(string spec, int d, bool uniform)
    {
        int seed = TestSeeds.Of(nameof(ClipSearchReachesEveryEdgeOfItsCandidates), spec, d);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var s = KvQuantSpec.TryParse(spec)!;
        var book = Book(s.Bits, uniform, rng);
        const int bt = 8, tokens = 400;
        var codec = new NuqTokenCodec(s, KvSide.Value, bt, d, book);
        var plain = new NuqTokenCodec(KvQuantSpec.TryParse(spec.Replace(":clip", ""))!, KvSide.Value, bt, d, book);
        int narrowest = 0, below = 0, above = 0, decided = 0;
        var block = new byte[codec.BlockBytes];
        var plainBlock = new byte[codec.BlockBytes];
        var x = new float[d];
        for (int n = 0; n < tokens; n++)
        {
            int t = n % bt;
            double centre = rng.NextDouble() * 2 - 1, sigma = 0.02 + rng.NextDouble() * 0.3;
            for (int c = 0; c < d; c++)
                x[c] = (float)(centre + sigma * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
            if (n % 4 != 3)
            {
                // One or two far values: the min/max scale spends its levels on them.
                double far = sigma * (3 + rng.NextDouble() * 12);
                x[rng.Next(d)] = (float)(centre + far);
                if (n % 2 == 0) x[rng.Next(d)] = (float)(centre - far * rng.NextDouble());
            }
            codec.EncodeToken(x, block, t);
            plain.EncodeToken(x, plainBlock, t);
            double Error(int r, int z) => ScaleError(x, r, z, book.Levels);
            int minMax = plainBlock[2 * t] | plainBlock[2 * t + 1] << 8, rc = minMax & 1023;
            int Z(int packed) => (packed >> 10) >= 32 ? (packed >> 10) - 64 : packed >> 10;
            float mid = (x.Max() + x.Min()) * 0.5f;
            var candidates = new List<(int Packed, double Error, int R, int Dz)> { (minMax, Error(rc, Z(minMax)), rc, 0) };
            for (int r = rc - 1; r >= Math.Max(0, rc - 16); r--)
            {
                int zc = (int)MathF.Round(mid / (RangeOf(r) / 16));
                for (int dz = -1; dz <= 1; dz++)
                {
                    int z = Math.Clamp(zc + dz, -32, 31);
                    candidates.Add((r | (z & 63) << 10, Error(r, z), r, dz));
                }
            }
            int got = block[2 * t] | block[2 * t + 1] << 8;
            var sorted = candidates.DistinctBy(c => c.Packed).OrderBy(c => c.Error).ToArray();
            Assert.Contains(got, sorted.Select(c => c.Packed));
            double gotError = sorted.First(c => c.Packed == got).Error;
            Assert.True(gotError <= sorted[0].Error * (1 + 1e-5) + 1e-12, $"token {n}: scale {got:x4} leaves {gotError}, a candidate leaves {sorted[0].Error}");
            if (sorted.Length > 1 && sorted[1].Error > sorted[0].Error * 1.001)
            {
                decided++;
                Assert.True(got == sorted[0].Packed, $"token {n}: scale {got:x4}, the best candidate is {sorted[0].Packed:x4}");
                if (sorted[0].R == rc - 16) narrowest++;
                if (sorted[0].R < rc && sorted[0].Dz == -1) below++;
                if (sorted[0].R < rc && sorted[0].Dz == 1) above++;
            }
        }
        output.WriteLine($"{decided} tokens with one best candidate: the narrowest range won {narrowest}, the zero below the middle {below}, above {above}");
        Assert.True(narrowest > 0 && below > 0 && above > 0, "the data does not reach every edge of the search");
    }

    /// <summary><c>:fit</c>: the codes (and outliers) are the min/max scale's; the stored scale is, among the documented
    /// candidates (the min/max scale, and range codes floor(32 (log2 b + 16)) and the one above, each with zero steps
    /// floor(a / (range/16)) and the one above, clamped to 6 bits, where a + b x level is the least-squares fit of the
    /// dense values on their codes' levels, computed here in double), one with the least squared error with those codes
    /// fixed.</summary>
    [Theory]
    [InlineData("nuq2-1%:fit", 64, 16)]
    [InlineData("nuq2-1%:qnorm:fit", 67, 9)]
    [InlineData("nuq3-1%:fit", 13, 9)]
    [InlineData("nuq4:fit", 40, 7)]
    [InlineData("nuq3-5%:fit", 96, 5)]
    public void FitStoresTheBestAffineScaleForTheMinMaxCodes(string spec, int d, int blockTokens)
    {
        int seed = TestSeeds.Of(nameof(FitStoresTheBestAffineScaleForTheMinMaxCodes), spec, d, blockTokens);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var s = KvQuantSpec.TryParse(spec)!;
        var book = Book(s.Bits, false, rng);
        var levels = book.DecodeLevels(s.QNorm);
        var codec = new NuqTokenCodec(s, KvSide.Value, blockTokens, d, book);
        var plain = new NuqTokenCodec(s with { Fit = false }, KvSide.Value, blockTokens, d, book);
        var x = KvQuantTestData.Activations(blockTokens, d, seed);
        var block = new byte[codec.BlockBytes];
        var plainBlock = new byte[codec.BlockBytes];
        var rows = codec.HasBlockOutliers ? new BlockOutliers() : null;
        var plainRows = codec.HasBlockOutliers ? new BlockOutliers() : null;
        foreach (int t in Shuffled(blockTokens, rng))
        {
            codec.EncodeToken(x.AsSpan(t * d, d), block, rows, t);
            plain.EncodeToken(x.AsSpan(t * d, d), plainBlock, plainRows, t);
        }
        Assert.Equal(plainBlock.AsSpan(2 * blockTokens).ToArray(), block.AsSpan(2 * blockTokens).ToArray());
        var outlierIndex = rows == null ? new HashSet<int>() : Enumerable.Range(0, rows.Count).Select(i => rows.Entry(i).Index).ToHashSet();
        int cb = (d * s.Bits + 7) / 8, moved = 0;
        for (int t = 0; t < blockTokens; t++)
        {
            var dense = Enumerable.Range(0, d).Where(c => !outlierIndex.Contains(t * d + c)).ToArray();
            var codes = block.AsSpan(2 * blockTokens + t * cb, cb).ToArray();
            double Error(int r, int z)
            {
                float range = RangeOf(r), zero = Math.Clamp(z, -32, 31) * (range / 16);
                return dense.Sum(c => Math.Pow(zero + range * levels[KvQuantReference.Code(codes, c, s.Bits)] - (double)x[t * d + c], 2));
            }
            int minMax = plainBlock[2 * t] | plainBlock[2 * t + 1] << 8;
            int Z(int packed) => (packed >> 10) >= 32 ? (packed >> 10) - 64 : packed >> 10;
            var candidates = new List<(int Packed, double Error)> { (minMax, Error(minMax & 1023, Z(minMax))) };
            var l = dense.Select(c => (double)levels[KvQuantReference.Code(codes, c, s.Bits)]).ToArray();
            var v = dense.Select(c => (double)x[t * d + c]).ToArray();
            double ml = l.Average(), mv = v.Average(), sll = l.Sum(q => (q - ml) * (q - ml));
            double b = sll > 0 ? l.Zip(v, (q, w) => (q - ml) * (w - mv)).Sum() / sll : 0, a = mv - b * ml;
            if (b > 0)
            {
                int rb = (int)Math.Floor(32 * (Math.Log2(b) + 16));
                for (int r = Math.Max(0, rb); r <= Math.Min(1023, rb + 1); r++)
                {
                    int z0 = (int)Math.Floor(a / (RangeOf(r) / 16));
                    for (int z = z0; z <= z0 + 1; z++) candidates.Add((r | (Math.Clamp(z, -32, 31) & 63) << 10, Error(r, z)));
                }
            }
            int got = block[2 * t] | block[2 * t + 1] << 8;
            Assert.Contains(got, candidates.Select(c => c.Packed));
            double best = candidates.Min(c => c.Error), gotError = candidates.First(c => c.Packed == got).Error;
            Assert.True(gotError <= best * (1 + 1e-5) + 1e-12, $"t{t}: scale {got:x4} leaves {gotError}, a candidate leaves {best}");
            if (got != minMax) moved++;
        }
        output.WriteLine($"{moved} of {blockTokens} tokens moved off the min/max scale");
        Assert.True(moved > 0, "no token moved off the min/max scale: the data does not test the fit");
    }
}
