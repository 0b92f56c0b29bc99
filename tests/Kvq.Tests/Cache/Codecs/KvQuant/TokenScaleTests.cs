using Kvq.Cache.Codecs.KvQuant;
using Xunit.Abstractions;
using static Kvq.Tests.Cache.Codecs.KvQuant.TokenScaleReference;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// The 16-bit token scale on its own, against a plain restatement (written for the codecs' mutation run: through the
/// codec, only the scales its random tokens need are ever encoded). Decode of every one of the 65,536 packed values;
/// the encoder at every range code's exact edge and on random intervals from 1e-6 to 3e4 wide, centred and far off
/// centre, against the smallest range (searched from code 0) whose interval around the rounded zero holds them.
/// </summary>
public class TokenScaleTests(ITestOutputHelper output)
{
    [Fact]
    public void EveryPackedValueDecodesToItsRangeAndSignedZero()
    {
        for (int p = 0; p < 65536; p++)
        {
            float range = RangeOf(p & 1023);
            int z = (p >> 10) >= 32 ? (p >> 10) - 64 : p >> 10;
            var (zero, r) = TokenScale.Decode((ushort)p);
            Assert.Equal(range, r);
            Assert.Equal(z * (range / 16), zero);
            Assert.Equal(range, TokenScale.Range(p & 1023));
        }
    }

    [Fact]
    public void ARangeExactlyAtACodeTakesThatCode()
    {
        // [-R(k), R(k)]: half-width exactly the range of code k, so k is the smallest code that holds it. The log
        // estimate of the code can land one above k (the f32 range rounds up), and the step down must take k then.
        for (int k = 0; k < 1024; k++)
        {
            float rk = TokenScale.Range(k);
            var (packed, zero, range) = TokenScale.Encode(-rk, rk);
            Assert.Equal(k, packed & 1023);
            Assert.Equal(0f, zero);
            Assert.Equal(rk, range);
            // Just wider needs the next code (the top code holds what it can).
            if (k < 1023) Assert.Equal(k + 1, TokenScale.Encode(-rk, MathF.BitIncrement(rk)).Packed & 1023);
        }
    }

    [Theory]
    [InlineData(0.0, 1.0)]        // centred intervals
    [InlineData(1.5, 1.0)]        // the zero near its 6-bit limit
    [InlineData(4.0, 0.5)]        // far off centre: the zero clamps and the range must grow to reach the values
    public void EncodeTakesTheSmallestRangeThatHoldsTheInterval(double offCentre, double spread)
    {
        int seed = TestSeeds.Of(nameof(EncodeTakesTheSmallestRangeThatHoldsTheInterval), offCentre, spread);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        for (int i = 0; i < 3000; i++)
        {
            float half = (float)Math.Pow(10, rng.NextDouble() * 10.5 - 6);          // 1e-6 to 3e4
            float mid = (float)((rng.NextDouble() * 2 - 1) * offCentre * half * (1 + spread * rng.NextDouble()));
            float min = mid - half, max = mid + half;
            if (i % 7 == 0) min = max;                                                // a constant token
            var (r, z) = Smallest(min, max);
            var (packed, zero, range) = TokenScale.Encode(min, max);
            Assert.True(r == (packed & 1023) && z == (packed >> 10 >= 32 ? (packed >> 10) - 64 : packed >> 10),
                $"[{min}, {max}]: code {packed & 1023}, zero step {packed >> 10}; the scheme gives {r}, {z}");
            Assert.Equal(TokenScale.Decode(packed), (zero, range));
        }
    }

    [Fact]
    public void ValuesBeyondTheScaleGetTheTopCodeAndTheClampedZero()
    {
        // 1e6 is past what 2 ranges of the top code (6.5e4 each) reach: the search stops at the top code.
        var (p, zero, range) = TokenScale.Encode(1e6f, 1e6f);
        Assert.Equal(1023, p & 1023);
        Assert.Equal(31, p >> 10);
        Assert.Equal(31 * (range / 16), zero);
        // A half-width past the top range: the code's estimate is clamped to the top code, not read past the table.
        Assert.Equal(1023, TokenScale.Encode(-1e6f, 1e6f).Packed & 1023);
        (p, zero, range) = TokenScale.Encode(-1e6f, -1e6f + 1);
        Assert.Equal(1023, p & 1023);
        Assert.Equal(32, p >> 10);   // -32 in 6 signed bits
        Assert.Equal(-2 * range, zero);
        Assert.Equal((zero, range), TokenScale.Decode(p));
        // Zero steps past the 6 signed bits clamp; any step in reach packs and decodes as itself.
        for (int r = 0; r < 1024; r += 31)
        {
            Assert.Equal(TokenScale.Pack(r, 31), TokenScale.Pack(r, 45));
            Assert.Equal(TokenScale.Pack(r, -32), TokenScale.Pack(r, -33));
            for (int z = -32; z <= 31; z++)
            {
                var (packed, zz, rr) = TokenScale.Pack(r, z);
                Assert.Equal(r | (z & 63) << 10, packed);
                Assert.Equal((z * (RangeOf(r) / 16), RangeOf(r)), (zz, rr));
                Assert.Equal((zz, rr), TokenScale.Decode(packed));
            }
            // ZeroCode: the nearest step, not clamped.
            float step = RangeOf(r) / 16;
            Assert.Equal(40, TokenScale.ZeroCode(40.2f * step, r));
            Assert.Equal(-41, TokenScale.ZeroCode(-40.8f * step, r));
        }
    }
}
