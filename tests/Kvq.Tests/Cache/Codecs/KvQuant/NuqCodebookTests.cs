using Kvq.Cache.Codecs.KvQuant;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// The codebook, the channel scales and the token outlier split on their own (written for the codecs' mutation run:
/// the codec tests build only valid codebooks and scales, so the checks that refuse bad ones, and the edges of the
/// split's guards, were decided by no test). Random seeded levels, checked against brute force.
/// </summary>
public class NuqCodebookTests(ITestOutputHelper output)
{
    private static float[] RandomLevels(int n, Random rng)
    {
        var levels = new float[n];
        for (int i = 0; i < n; i++) levels[i] = -1f + 2f * (i + (float)(rng.NextDouble() * 0.8 - 0.4)) / (n - 1);
        Array.Sort(levels);
        return levels;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(8)]
    public void MidpointsNearestAndDecodeLevelsFollowTheLevels(int bits)
    {
        int seed = TestSeeds.Of(nameof(MidpointsNearestAndDecodeLevelsFollowTheLevels), bits);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        int n = 1 << bits;
        var levels = RandomLevels(n, rng);
        float scale = 0.9f + (float)rng.NextDouble() * 0.2f, offset = (float)(rng.NextDouble() * 0.1 - 0.05);
        var book = new NuqCodebook(levels, scale, offset);
        Assert.Equal(bits, book.Bits);
        Assert.Equal(levels, book.Levels);
        Assert.Equal(n - 1, book.Midpoints.Length);
        for (int i = 0; i + 1 < n; i++) Assert.Equal((levels[i] + levels[i + 1]) * 0.5f, book.Midpoints[i]);
        // The levels are the codebook's own: changing the array given (or the one read back) changes nothing.
        float first = levels[0];
        levels[0] = -5f;
        Assert.Equal(first, book.Levels[0]);
        levels[0] = first;
        // Nearest: brute force by distance, ties (u exactly on a midpoint) and NaN to the lower level.
        for (int j = 0; j < 2000; j++)
        {
            float u = (float)(rng.NextDouble() * 2.6 - 1.3);
            int want = 0;
            for (int i = 1; i < n; i++) if (Math.Abs(u - levels[i]) < Math.Abs(u - levels[want])) want = i;
            int got = book.Nearest(u);
            if (got != want) Assert.Equal(Math.Abs(u - levels[want]), Math.Abs(u - levels[got]), 6);   // an f32 near-tie
        }
        for (int i = 0; i + 1 < n; i++)
        {
            Assert.Equal(i, book.Nearest(book.Midpoints[i]));
            Assert.Equal(i + 1, book.Nearest(MathF.BitIncrement(book.Midpoints[i])));
        }
        Assert.Equal(0, book.Nearest(float.NaN));
        Assert.Equal(0, book.Nearest(float.NegativeInfinity));
        Assert.Equal(n - 1, book.Nearest(float.PositiveInfinity));
        // Decode levels: the levels as they are, or level * scale + offset under Q-Norm; a fresh array each time.
        var plain = book.DecodeLevels(false);
        Assert.Equal(levels, plain);
        plain[0] = 7f;
        Assert.Equal(first, book.Levels[0]);
        var q = book.DecodeLevels(true);
        for (int i = 0; i < n; i++) Assert.Equal(levels[i] * scale + offset, q[i]);
        Assert.Equal(levels, book.DecodeLevels(false));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void UniformLevelsAreEvenlySpacedFromMinusOneToOne(int bits)
    {
        var book = NuqCodebook.Uniform(bits);
        int n = 1 << bits;
        Assert.Equal(bits, book.Bits);
        Assert.Equal(n, book.Levels.Length);
        Assert.Equal(-1f, book.Levels[0]);
        Assert.Equal(1f, book.Levels[n - 1]);
        for (int i = 0; i < n; i++) Assert.Equal(-1.0 + 2.0 * i / (n - 1), book.Levels[i], 6);
        Assert.Equal(1f, book.NormScale);
        Assert.Equal(0f, book.NormOffset);
        Assert.True(double.IsNaN(book.Sensitivity));
    }

    [Fact]
    public void BadCodebooksAreRefusedAndTheEdgesAccepted()
    {
        float[] Even(int n) => Enumerable.Range(0, n).Select(i => -1f + 2f * i / Math.Max(n - 1, 1)).ToArray();
        // Level counts: 2^B from 2 to 256.
        foreach (int n in new[] { 0, 1, 3, 6, 512 })
            Assert.Contains("2^B levels", Assert.Throws<ArgumentException>(() => new NuqCodebook(Even(n))).Message);
        Assert.Equal(1, new NuqCodebook(Even(2)).Bits);
        Assert.Equal(8, new NuqCodebook(Even(256)).Bits);
        // Levels finite and strictly increasing (equal neighbours refused, at the first level and the last).
        foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            var l = Even(4);
            l[2] = bad;
            Assert.Throws<ArgumentException>(() => new NuqCodebook(l));
        }
        // An infinite first or last level passes the increasing check, so only the finite check refuses it.
        var infLast = Even(4);
        infLast[3] = float.PositiveInfinity;
        Assert.Throws<ArgumentException>(() => new NuqCodebook(infLast));
        var infFirst = Even(4);
        infFirst[0] = float.NegativeInfinity;
        Assert.Throws<ArgumentException>(() => new NuqCodebook(infFirst));
        foreach (int at in new[] { 1, 3 })
        {
            var l = Even(4);
            l[at] = l[at - 1];
            Assert.Contains("increase strictly", Assert.Throws<ArgumentException>(() => new NuqCodebook(l)).Message);
            l[at] = l[at - 1] - 0.25f;
            Assert.Throws<ArgumentException>(() => new NuqCodebook(l));
        }
        // Q-Norm scale and offset finite.
        foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            Assert.Throws<ArgumentException>(() => new NuqCodebook(Even(4), normScale: bad));
            Assert.Throws<ArgumentException>(() => new NuqCodebook(Even(4), normOffset: bad));
        }
        // Sensitivity: unknown (NaN) or a finite value >= 0.
        foreach (double bad in new[] { -1e-9, -1.0, double.PositiveInfinity, double.NegativeInfinity })
            Assert.Contains("sensitivity", Assert.Throws<ArgumentException>(() => new NuqCodebook(Even(4), sensitivity: bad)).Message);
        Assert.Equal(0.0, new NuqCodebook(Even(4), sensitivity: 0).Sensitivity);
        Assert.Equal(2.5, new NuqCodebook(Even(4), sensitivity: 2.5).Sensitivity);
        Assert.True(double.IsNaN(new NuqCodebook(Even(4)).Sensitivity));
        var q = new NuqCodebook(Even(4), -0.5f, 3f);
        Assert.Equal((-0.5f, 3f), (q.NormScale, q.NormOffset));
    }

    [Fact]
    public void ChannelScalesSliceEachLayerAndHeadAndRefuseBadEntries()
    {
        int seed = TestSeeds.Of(nameof(ChannelScalesSliceEachLayerAndHeadAndRefuseBadEntries));
        var rng = new Random(seed);
        const int layers = 3, heads = 2, d = 5, n = layers * heads * d;
        var zero = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var range = Enumerable.Range(0, n).Select(_ => 0.05f + (float)rng.NextDouble()).ToArray();
        var s = new ChannelScales(layers, heads, d, zero, range);
        Assert.Equal((layers, heads, d), (s.Layers, s.KvHeads, s.HeadDim));
        for (int l = 0; l < layers; l++)
            for (int h = 0; h < heads; h++)
            {
                Assert.Equal(zero.AsSpan((l * heads + h) * d, d).ToArray(), s.Zeros(l, h).ToArray());
                Assert.Equal(range.AsSpan((l * heads + h) * d, d).ToArray(), s.Ranges(l, h).ToArray());
            }
        // Lengths must match layers x heads x head dim exactly.
        Assert.Throws<ArgumentException>(() => new ChannelScales(layers, heads, d, zero[..^1], range));
        Assert.Throws<ArgumentException>(() => new ChannelScales(layers, heads, d, zero, range[..^1]));
        Assert.Throws<ArgumentException>(() => new ChannelScales(layers, heads, d + 1, zero, range));
        // Each entry: a finite zero and a finite range > 0 (the first entry and the last checked alike).
        foreach (int at in new[] { 0, n - 1 })
        {
            foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
            {
                var z = (float[])zero.Clone();
                z[at] = bad;
                Assert.Throws<ArgumentException>(() => new ChannelScales(layers, heads, d, z, range));
            }
            foreach (float bad in new[] { 0f, -0.5f, float.NaN, float.PositiveInfinity })
            {
                var r = (float[])range.Clone();
                r[at] = bad;
                Assert.Contains($"entry {at}", Assert.Throws<ArgumentException>(() => new ChannelScales(layers, heads, d, zero, r)).Message);
            }
        }
        var tiny = (float[])range.Clone();
        tiny[n - 1] = float.Epsilon;
        Assert.Equal(float.Epsilon, new ChannelScales(layers, heads, d, zero, tiny).Ranges(layers - 1, heads - 1)[d - 1]);
    }

    [Fact]
    public void TokenSplitNeedsOneValueLeftAndWritesOnlyTheIndicesThatFit()
    {
        var x = new float[] { 0.5f, -3f, 2f, 9f, -0.25f, 1f, 4f };
        var isOut = new bool[7];
        // 2k must leave at least one value: k = 3 of 7 does, k = 4 of 7 and k = 3 of 6 do not.
        var (min, max) = TokenOutliers.Split(x, 3, isOut, new int[6]);
        Assert.Equal((1f, 1f), (min, max));
        Assert.Throws<ArgumentException>(() => TokenOutliers.Split(x, 4, isOut, new int[8]));
        Assert.Throws<ArgumentException>(() => TokenOutliers.Split(x.AsSpan(0, 6), 3, isOut, new int[6]));
        // An index buffer shorter than 2k gets the first indices in channel order; the split itself is unchanged.
        var shortIdx = new int[1];
        (min, max) = TokenOutliers.Split(x, 2, isOut, shortIdx);
        Assert.Equal(1, shortIdx[0]);
        Assert.Equal((0.5f, 2f), (min, max));
        Assert.Equal(new[] { false, true, false, true, true, false, true }, isOut);
        // Channel 1 the largest (the search must not start from an already chosen channel): 1 and 6 largest, 3 and 4
        // smallest.
        var z = new float[] { 0.5f, 9f, 2f, -3f, -0.25f, 1f, 4f };
        (min, max) = TokenOutliers.Split(z, 2, isOut, new int[4]);
        Assert.Equal(new[] { false, true, false, true, true, false, true }, isOut);
        Assert.Equal((0.5f, 2f), (min, max));
    }
}
