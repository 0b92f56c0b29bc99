using Kvq.Cache.Codecs;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>
/// <see cref="AsymmetricQuantizer"/>'s error bound (the one the intB, intB-ch and KIVI codecs give the codec matrix)
/// against a brute-force round trip over [lo, hi]: it holds, and each of its terms is needed and not larger than the
/// error it covers (the matrix only checks that the bound holds and is not 4x loose, which a wrong term passes).
/// Written for the codecs' mutation run (docs/testing.md).
/// </summary>
public class UniformBoundTests(ITestOutputHelper output)
{
    /// <summary>Largest |decode(encode(x)) - x| over [lo, hi]: every f32 step around each code's midpoint (where the
    /// rounding error peaks) and the ends, plus random points.</summary>
    private static float WorstError(float lo, float hi, int bits, Random rng)
    {
        var (s, z) = AsymmetricQuantizer.Fit(lo, hi, bits);
        float sf = (float)s, zf = (float)z;
        float worst = 0;
        void Try(float x)
        {
            if (!(x >= lo && x <= hi)) return;
            float y = AsymmetricQuantizer.Code(x, sf, zf, bits) * sf + zf;
            worst = MathF.Max(worst, MathF.Abs(y - x));
        }
        Try(lo);
        Try(hi);
        for (int k = 0; k <= AsymmetricQuantizer.Levels(bits); k++)
        {
            float mid = zf + (k + 0.5f) * sf;
            float x = mid;
            for (int i = 0; i < 4; i++) x = MathF.BitDecrement(x);
            for (int i = 0; i < 9; i++, x = MathF.BitIncrement(x)) Try(x);
        }
        for (int i = 0; i < 2000; i++) Try(lo + (float)rng.NextDouble() * (hi - lo));
        return worst;
    }

    /// <summary>A range whose ends and step are f16 values: the rounding of scale and zero adds nothing, so the bound is
    /// half a step plus its f32 slack, and the round trip meets half a step at the midpoints.</summary>
    [Theory]
    [InlineData(2, -1.5f, 0.25f)]
    [InlineData(4, 3f, 0.125f)]
    [InlineData(8, -96f, 0.75f)]
    [InlineData(8, 1000f, 0.5f)]
    public void ExactRangesAreBoundByHalfAStep(int bits, float lo, float step)
    {
        int levels = AsymmetricQuantizer.Levels(bits);
        float hi = lo + levels * step;
        Assert.Equal(lo, (float)(Half)lo);
        Assert.Equal(step, (float)(Half)((hi - lo) / levels));
        float bound = AsymmetricQuantizer.MaxAbsError(lo, hi, bits);
        float slack = 1e-6f * MathF.Max(MathF.Abs(lo), MathF.Abs(hi));
        Assert.Equal(step / 2 + slack, bound);
        float worst = WorstError(lo, hi, bits, new Random(TestSeeds.Of(nameof(ExactRangesAreBoundByHalfAStep), bits, lo)));
        Assert.True(worst <= bound, $"error {worst} > bound {bound}");
        Assert.True(worst >= step / 2, $"error {worst} never reaches half a step {step / 2}");
    }

    /// <summary>Random ranges, their ends not f16 values (the zero rounds up past lo or down below it, the step rounds
    /// either way): the bound holds, and is within half a step plus the two rounding terms of the error seen.</summary>
    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    public void RoundedRangesStayWithinTheBound(int bits)
    {
        int seed = TestSeeds.Of(nameof(RoundedRangesStayWithinTheBound), bits);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        int levels = AsymmetricQuantizer.Levels(bits), zeroUp = 0, zeroDown = 0;
        for (int i = 0; i < 300; i++)
        {
            float lo = (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-2, 4)));
            float hi = lo + (float)(rng.NextDouble() * Math.Pow(10, rng.Next(-2, 3)));
            var (s, z) = AsymmetricQuantizer.Fit(lo, hi, bits);
            float sf = (float)s, zf = (float)z;
            if (zf > lo) zeroUp++;
            if (zf < lo) zeroDown++;
            float bound = AsymmetricQuantizer.MaxAbsError(lo, hi, bits);
            float worst = WorstError(lo, hi, bits, rng);
            Assert.True(worst <= bound, $"[{lo}, {hi}] {bits} bits: error {worst} > bound {bound}");
            // Below f16(lo) values clamp to code 0 (error zf - lo); L steps of the rounded scale may end short of hi.
            float shortfall = MathF.Max(0, hi - (zf + levels * sf));
            float seen = MathF.Max(MathF.Max(worst, zf - lo), shortfall);
            float terms = sf / 2 + MathF.Abs(zf - lo) + levels * MathF.Abs((hi - lo) / levels - sf);
            Assert.True(bound <= seen + terms + 1e-5f * MathF.Max(MathF.Abs(lo), MathF.Abs(hi)) + 1e-7f,
                $"[{lo}, {hi}] {bits} bits: bound {bound} is far above the error {seen}");
        }
        Assert.True(zeroUp > 20 && zeroDown > 20, $"zero rounded up {zeroUp}, down {zeroDown} times");
    }

    /// <summary>Where f16(lo) lies above lo, the values below it clamp to code 0 and lose zf - lo: the bound covers it
    /// (the term |zf - lo|), and no more than it, half a step and the slack.</summary>
    [Theory]
    [InlineData(2, 1.0009f, 3f)]
    [InlineData(4, -2.9985f, 5f)]
    [InlineData(8, 7.0021f, 7.5f)]
    public void AZeroRoundedUpIsCovered(int bits, float lo, float hi)
    {
        var (s, z) = AsymmetricQuantizer.Fit(lo, hi, bits);
        float sf = (float)s, zf = (float)z;
        Assert.True(zf > lo, $"f16({lo}) = {zf} does not round up");
        float err = zf - lo;   // x = lo decodes to code 0, the zero
        Assert.Equal(zf, AsymmetricQuantizer.Code(lo, sf, zf, bits) * sf + zf);
        float bound = AsymmetricQuantizer.MaxAbsError(lo, hi, bits);
        int levels = AsymmetricQuantizer.Levels(bits);
        float scaleTerm = levels * MathF.Abs((hi - lo) / levels - sf);
        Assert.True(bound >= err, $"bound {bound} < error {err} at lo");
        Assert.True(bound <= sf / 2 + err + scaleTerm + 2e-6f * MathF.Abs(hi), $"bound {bound} is more than its terms");
    }

    /// <summary>A zero scale (every value within f16's rounding of the first): every code decodes to the zero, which
    /// is the value (to f16); the code is 0.</summary>
    [Fact]
    public void ZeroScaleCodesAreZero()
    {
        Assert.Equal(0, AsymmetricQuantizer.Code(1.0000001f, 0f, 1f, 4));
        Assert.Equal(0, AsymmetricQuantizer.Code(0.9999999f, 0f, 1f, 8));
        Assert.Equal(3, AsymmetricQuantizer.Code(9f, 1f, 0f, 2));     // clamps to L
        Assert.Equal(0, AsymmetricQuantizer.Code(-9f, 1f, 0f, 2));    // clamps to 0
        Assert.Equal(2, AsymmetricQuantizer.Code(2.5f, 1f, 0f, 4));   // half to even
        Assert.Equal(4, AsymmetricQuantizer.Code(3.5f, 1f, 0f, 4));
    }
}
