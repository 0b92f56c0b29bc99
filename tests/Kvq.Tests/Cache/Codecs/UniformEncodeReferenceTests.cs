using Kvq.Cache.Codecs;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Codecs;

/// <summary>
/// The uniform integer encoders (intB per token in groups, intB-ch per channel over a block, KIVI's keys and values)
/// against a plain restatement of the scheme written from its description: per group, zero = f16(min), scale =
/// f16((max - min) / (2^B - 1)), code = clamp(round-half-even((x - zero) / scale), 0, 2^B - 1), value = code * scale +
/// zero. The round trip must equal the reference value for value, bit for bit (the matrix's error bound would let a
/// wrong range, a wrong level count or a truncating round through). Random seeded inputs, odd block sizes.
/// </summary>
public class UniformEncodeReferenceTests(ITestOutputHelper output)
{
    /// <summary>name, bits, values per group along the head dim (0: per channel over the block's tokens).</summary>
    [Theory]
    [InlineData("int8", 8, 32, 96, 13)]
    [InlineData("int4", 4, 32, 64, 7)]
    [InlineData("int2", 2, 32, 32, 9)]
    [InlineData("int4-g64", 4, 64, 128, 5)]
    [InlineData("int2-tok", 2, 40, 40, 11)]
    [InlineData("int8-tok", 8, 24, 24, 3)]
    [InlineData("int8-ch", 8, 0, 24, 17)]
    [InlineData("int4-ch", 4, 0, 40, 31)]
    [InlineData("int2-ch", 2, 0, 64, 6)]
    public void RoundTripEqualsThePlainScheme(string name, int bits, int group, int headDim, int blockTokens)
    {
        int seed = TestSeeds.Of(nameof(RoundTripEqualsThePlainScheme), name, headDim, blockTokens);
        output.WriteLine($"seed {seed}");
        var codec = KvCodecRegistry.Create(name, KvSide.Key, blockTokens, headDim);
        Check(codec, bits, group, seed);
    }

    /// <summary>KIVI: keys per channel over its 32-token blocks, values per token in groups of 32 (or the head dim).</summary>
    [Theory]
    [InlineData(2, 64)]
    [InlineData(4, 96)]
    [InlineData(2, 16)]
    public void KiviEncodesKeysPerChannelAndValuesPerToken(int bits, int headDim)
    {
        int seed = TestSeeds.Of(nameof(KiviEncodesKeysPerChannelAndValuesPerToken), bits, headDim);
        output.WriteLine($"seed {seed}");
        Check(KvCodecRegistry.Create($"kivi{bits}", KvSide.Key, 32, headDim), bits, 0, seed);
        Check(KvCodecRegistry.Create($"kivi{bits}", KvSide.Value, 32, headDim), bits, Math.Min(32, headDim), seed + 1);
    }

    private static void Check(KvCodec codec, int bits, int group, int seed)
    {
        int bt = codec.BlockTokens, hd = codec.HeadDim;
        var xs = Inputs(bt, hd, seed);
        var block = CodecTestData.Encode(codec, xs, seed);
        var got = new float[bt * hd];
        codec.DecodeBlock(block, bt, got);
        var expected = new float[bt * hd];
        if (group > 0)
        {
            for (int t = 0; t < bt; t++)
                for (int g0 = 0; g0 < hd; g0 += group)
                {
                    var idx = Enumerable.Range(t * hd + g0, group).ToArray();
                    Reference(xs, idx, bits, expected);
                }
        }
        else
        {
            for (int c = 0; c < hd; c++)
                Reference(xs, Enumerable.Range(0, bt).Select(t => t * hd + c).ToArray(), bits, expected);
        }
        for (int i = 0; i < got.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(got[i]),
                $"{codec.Name} ({bt}x{hd}): value {i} (token {i / hd}, channel {i % hd}): x {xs[i]}, reference {expected[i]}, codec {got[i]}");
        int levelsSeen = got.Distinct().Count();
        Assert.True(levelsSeen > Math.Min(1 << bits, got.Length / 4), $"{codec.Name}: only {levelsSeen} distinct values: the inputs do not exercise the codes");
    }

    /// <summary>The scheme over one group of values (their indices into xs), written into expected.</summary>
    private static void Reference(float[] xs, int[] idx, int bits, float[] expected)
    {
        int levels = (1 << bits) - 1;
        float lo = idx.Min(i => xs[i]), hi = idx.Max(i => xs[i]);
        float zero = (float)(Half)lo;
        float scale = (float)(Half)((hi - lo) / levels);
        foreach (int i in idx)
        {
            int code = scale == 0 ? 0 : Math.Clamp((int)MathF.Round((xs[i] - zero) / scale, MidpointRounding.ToEven), 0, levels);
            expected[i] = code * scale + zero;
        }
    }

    /// <summary>N(0, 1) with a per-channel offset and spread (so per-channel and per-token ranges differ), one channel
    /// of large values and a few repeated values (a group's min and max hit more than once).</summary>
    private static float[] Inputs(int n, int hd, int seed)
    {
        var rng = new Random(seed);
        var x = new float[n * hd];
        for (int t = 0; t < n; t++)
            for (int c = 0; c < hd; c++)
            {
                double g = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
                x[t * hd + c] = (float)((c % 5 - 2) * 0.7 + (1 + c % 3) * g + (c == hd / 2 ? 9 : 0));
            }
        for (int k = 0; k < hd; k++) x[rng.Next(x.Length)] = x[rng.Next(x.Length)];
        return x;
    }
}
