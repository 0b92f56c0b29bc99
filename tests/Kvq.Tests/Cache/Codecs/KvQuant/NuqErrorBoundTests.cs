using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// The bounds the nuq codecs state for the codec matrix (<see cref="IKvCodecReference.MaxAbsError"/>) must hold and be
/// tight: a bound that only holds checks nothing once it is loose (found by the codecs' mutation run, where a looser
/// interval, f16 or slack term passed every test). Checked against brute force: the code interval's worst error over a
/// fine grid of the interval, f16's rounding through System.Half, and the f32 decode arithmetic.
/// </summary>
public class NuqErrorBoundTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void IntervalIsTheWorstErrorOfTheCodeIntervalHoldingU(int bits)
    {
        int seed = TestSeeds.Of(nameof(IntervalIsTheWorstErrorOfTheCodeIntervalHoldingU), bits);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var levels = new float[1 << bits];
        for (int i = 0; i < levels.Length; i++) levels[i] = -1f + 2f * (i + (float)(rng.NextDouble() * 0.8 - 0.4)) / (levels.Length - 1);
        Array.Sort(levels);
        var book = new NuqCodebook(levels, 1.05f, 0.02f);
        foreach (bool qnorm in new[] { false, true })
        {
            var decode = book.DecodeLevels(qnorm);
            // Brute force: the worst |v - decode(code)| over a fine grid of [-1, 1] per code.
            const int grid = 40001;
            var worst = new float[levels.Length];
            for (int g = 0; g < grid; g++)
            {
                float v = -1f + 2f * g / (grid - 1);
                int code = KvQuantReference.Nearest(v, levels);
                worst[code] = Math.Max(worst[code], Math.Abs(v - decode[code]));
            }
            for (int trial = 0; trial < 500; trial++)
            {
                float u = (float)(rng.NextDouble() * 2.6 - 1.3);
                int code = KvQuantReference.Nearest(u, levels);
                float expected = Math.Max(worst[code], Math.Abs(u - decode[code]));   // outside [-1, 1]: reaches u
                float got = NuqErrorBound.Interval(u, book, decode);
                Assert.True(Math.Abs(got - expected) <= 2.5f / (grid - 1), $"u {u} code {code} qnorm {qnorm}: {got} vs brute force {expected}");
            }
        }
    }

    [Fact]
    public void F16BoundIsHalfAnF16StepOrTheOverflow()
    {
        var rng = new Random(TestSeeds.Of(nameof(F16BoundIsHalfAnF16StepOrTheOverflow)));
        int tight = 0;
        for (int i = 0; i < 20000; i++)
        {
            // Normal f16 range, subnormals, and past the largest f16.
            float x = (i % 4) switch
            {
                0 => (float)((rng.NextDouble() - 0.5) * 200),
                1 => (float)((rng.NextDouble() - 0.5) * 1e-5),
                2 => (float)(rng.NextDouble() * 60000) * (rng.Next(2) * 2 - 1),
                _ => (float)(65504 + rng.NextDouble() * 1e5) * (rng.Next(2) * 2 - 1),
            };
            float stored = Math.Abs(x) > 65504f ? Math.Sign(x) * 65504f : (float)(Half)x;   // the codecs clamp, then round
            float err = Math.Abs(x - stored), bound = NuqErrorBound.F16(x);
            Assert.True(err <= bound, $"{x}: f16 error {err} above the bound {bound}");
            // Tight: at most a whole f16 step (a 2^-24 subnormal step, 2^-11 relative above) beyond the overflow.
            float a = Math.Abs(x);
            float step = a > 65504f ? 32f + (a - 65504f) : Math.Max(a / 1024f, 1f / (1 << 24));
            Assert.True(bound <= step, $"{x}: bound {bound} looser than an f16 step {step}");
            if (err > bound * 0.5f) tight++;
        }
        output.WriteLine($"{tight} of 20000 errors above half the bound");
        Assert.True(tight > 1000);
    }

    [Fact]
    public void SlackIsAFewF32UlpsOfTheDecodeOperands()
    {
        var rng = new Random(TestSeeds.Of(nameof(SlackIsAFewF32UlpsOfTheDecodeOperands)));
        for (int i = 0; i < 1000; i++)
        {
            float zero = (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 4)));
            float range = (float)(rng.NextDouble() * Math.Pow(10, rng.Next(-3, 4))) + 1e-6f;
            float s = NuqErrorBound.Slack(zero, range), scale = Math.Abs(zero) + Math.Abs(range);
            // zero + range * level in f32 is off by at most ~2 ulps of the operands' magnitude: 2^-23 relative each.
            Assert.True(s >= 2 * scale / (1 << 23), $"slack {s} below two ulps of {scale}");
            Assert.True(s <= 8 * scale / (1 << 23) + 1e-29f, $"slack {s} more than a few ulps of {scale}");
        }
    }

    [Fact]
    public void NestedUnpackedBuffersDoNotShareStorage()
    {
        // A re-entrant unpack on the same thread gets its own buffers (the outer one is still in use).
        const int d = 16, tokens = 8;
        int bits = BlockOutliers.IndexBitsFor(tokens, d);
        var a = new BlockOutliers();
        var b = new BlockOutliers();
        var rng = new Random(TestSeeds.Of(nameof(NestedUnpackedBuffersDoNotShareStorage)));
        for (int t = 0; t < tokens; t++)
        {
            a.SetToken(t, d, bits, new[] { t % d, (t + 5) % d }.Order().ToArray(), [BitConverter.HalfToUInt16Bits((Half)(t + 0.5f)), BitConverter.HalfToUInt16Bits((Half)(-t - 0.25f))]);
            b.SetToken(t, d, bits, [(t * 3 + 1) % d], [BitConverter.HalfToUInt16Bits((Half)(float)rng.NextDouble())]);
        }
        using var outer = new NuqOutlierRows.Unpacked(a.Count);
        int na = outer.Read(a, tokens * d);
        var indexA = outer.Index[..na].ToArray();
        var valueA = outer.Value[..na].ToArray();
        using (var inner = new NuqOutlierRows.Unpacked(b.Count))
        {
            int nb = inner.Read(b, tokens * d);
            Assert.Equal(b.Count, nb);
            for (int i = 0; i < nb; i++) Assert.Equal(b.Entry(i).Index, inner.Index[i]);
        }
        Assert.Equal(indexA, outer.Index[..na].ToArray());
        Assert.Equal(valueA, outer.Value[..na].ToArray());
        for (int i = 0; i < na; i++)
        {
            var (index, h) = a.Entry(i);
            Assert.Equal(index, indexA[i]);
            Assert.Equal((float)BitConverter.UInt16BitsToHalf(h), valueA[i]);
        }
        // A limit keeps only the entries of the first tokens.
        using var prefix = new NuqOutlierRows.Unpacked(a.Count);
        Assert.Equal(2 * 3, prefix.Read(a, 3 * d));
    }
}
