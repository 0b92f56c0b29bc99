using Kvq.Cache.Attention;
using Kvq.Tensors.Quant;

namespace Kvq.Tests.Cache;

public class TileMathTests
{
    [Theory]
    [InlineData(32, 64, 3)]
    [InlineData(7, 64, 1)]
    [InlineData(33, 128, 8)]
    [InlineData(5, 16, 2)]
    [InlineData(9, 8, 4)]    // head dim 8: reference path
    [InlineData(11, 96, 5)]
    [InlineData(30, 64, 48)]
    [InlineData(2, 64, 3)]
    public void FastPathsEqualReferences(int count, int d, int nq)
    {
        var r = new Random(count * 100 + d + nq);
        float[] Rand(int n) => Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var tile = Rand(count * d);
        var q = Rand(nq * d);
        var s1 = new float[nq * count];
        var s2 = new float[nq * count];
        TileMath.Scores(tile, count, d, q, nq, s1);
        TileMath.ScoresReference(tile, count, d, q, nq, s2);
        for (int i = 0; i < s1.Length; i++) Assert.True(Math.Abs(s1[i] - s2[i]) <= 1e-5f * (1 + Math.Abs(s2[i])), $"score {i}");
        var w = Rand(nq * count);
        var a1 = Rand(nq * d);
        var a2 = (float[])a1.Clone();
        TileMath.Accumulate(tile, count, d, w, nq, a1);
        TileMath.AccumulateReference(tile, count, d, w, nq, a2);
        for (int i = 0; i < a1.Length; i++) Assert.True(Math.Abs(a1[i] - a2[i]) <= 1e-5f * (1 + Math.Abs(a2[i])), $"acc {i}");
    }
}

public class HalfTileMathTests
{
    [Avx512Theory("HalfTileMath is the AVX-512 f16 kernel (elsewhere f16 codecs use the tile path that TileMathTests cover)")]
    [InlineData(32, 64, 3)]
    [InlineData(5, 128, 8)]
    [InlineData(1, 16, 1)]
    [InlineData(31, 64, 4)]
    [InlineData(7, 48, 2)]
    public void FusedHalfEqualsDecodeThenTile(int count, int d, int nq)
    {
        Assert.True(HalfTileMath.IsSupported(d), $"head dim {d}: the fused f16 kernel would not run");
        var r = new Random(count + d + nq);
        var tile = Enumerable.Range(0, count * d).Select(_ => (Half)(r.NextDouble() * 4 - 2)).ToArray();
        var wide = tile.Select(h => (float)h).ToArray();
        var q = Enumerable.Range(0, nq * d).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var s1 = new float[nq * count];
        var s2 = new float[nq * count];
        HalfTileMath.Scores(tile, count, d, q, nq, s1);
        TileMath.ScoresReference(wide, count, d, q, nq, s2);
        for (int i = 0; i < s1.Length; i++) Assert.True(Math.Abs(s1[i] - s2[i]) <= 1e-4f * (1 + Math.Abs(s2[i])), $"score {i}");
        var w = Enumerable.Range(0, nq * count).Select(_ => (float)r.NextDouble()).ToArray();
        var a1 = Enumerable.Range(0, nq * d).Select(_ => (float)r.NextDouble()).ToArray();
        var a2 = (float[])a1.Clone();
        HalfTileMath.Accumulate(tile, count, d, w, nq, a1);
        TileMath.AccumulateReference(wide, count, d, w, nq, a2);
        for (int i = 0; i < a1.Length; i++) Assert.True(Math.Abs(a1[i] - a2[i]) <= 1e-4f * (1 + Math.Abs(a2[i])), $"acc {i}");
    }

    /// <summary>Scores of <paramref name="q"/> and then accumulators of random weights and starting values (drawn from
    /// <paramref name="r"/>) by the decode kernels, bitwise those of the per-row kernels; returns the scores.</summary>
    private static float[] AssertDecodeKernelsEqualPerRow(Half[] tile, int count, int d, float[] q, int nq, Random r)
    {
        var s1 = new float[nq * count];
        var s2 = new float[nq * count];
        HalfTileMath.Scores(tile, count, d, q, nq, s1);
        HalfTileMath.ScoresPerRow(tile, count, d, q, nq, s2);
        for (int i = 0; i < s1.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(s1[i]) == BitConverter.SingleToInt32Bits(s2[i]), $"score {i}: {s1[i]:R} vs {s2[i]:R}");
        var w = Enumerable.Range(0, nq * count).Select(_ => (float)r.NextDouble()).ToArray();
        var a1 = Enumerable.Range(0, nq * d).Select(_ => (float)r.NextDouble()).ToArray();
        var a2 = (float[])a1.Clone();
        HalfTileMath.Accumulate(tile, count, d, w, nq, a1);
        HalfTileMath.AccumulatePerRow(tile, count, d, w, nq, a2);
        for (int i = 0; i < a1.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(a1[i]) == BitConverter.SingleToInt32Bits(a2[i]), $"acc {i}: {a1[i]:R} vs {a2[i]:R}");
        return s1;
    }

    /// <summary>The decode kernels (keys widened once for all query rows, values once per token for every row's
    /// accumulators) give bitwise the sums of the per-row kernels they replaced.</summary>
    [Avx512Theory("HalfTileMath is the AVX-512 f16 kernel")]
    [InlineData(32, 64, 3)]
    [InlineData(32, 64, 1)]
    [InlineData(31, 64, 4)]
    [InlineData(6, 128, 2)]
    [InlineData(3, 64, 3)]
    [InlineData(13, 48, 3)]
    [InlineData(32, 64, 6)]
    public void DecodeKernelsEqualPerRowKernelsBitwise(int count, int d, int nq)
    {
        var r = new Random(TestSeeds.Of("halfdecode", count, d, nq));
        var tile = Enumerable.Range(0, count * d).Select(_ => (Half)(r.NextDouble() * 4 - 2)).ToArray();
        var q = Enumerable.Range(0, nq * d).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        AssertDecodeKernelsEqualPerRow(tile, count, d, q, nq, r);
    }

    /// <summary>The decode kernels widen a tile without inf/NaN the cheaper way (<see cref="HalfDot.F16ToF32Finite"/>)
    /// and any other tile the exact way: either way their sums stay bitwise those of the per-row kernels (which always
    /// widen exactly), for random tiles with subnormals, zeros of both signs and the largest finite values, and for
    /// tiles with one inf or NaN anywhere (the check must see it, also in the last keys that the widened path leaves
    /// to the per-row tail).</summary>
    [Avx512Theory("HalfTileMath is the AVX-512 f16 kernel")]
    [InlineData(32, 64, 3, 0)]
    [InlineData(32, 64, 3, 1)]
    [InlineData(32, 64, 3, 2)]
    [InlineData(29, 64, 4, 1)]
    [InlineData(31, 128, 2, 2)]
    [InlineData(5, 64, 3, 1)]
    [InlineData(17, 48, 3, 0)]
    [InlineData(17, 48, 3, 1)]
    [InlineData(1, 64, 1, 2)]
    [InlineData(9, 16, 2, 0)]
    public void FiniteWideningKeepsTheSumsBitwise(int count, int d, int nq, int special)
    {
        var r = new Random(TestSeeds.Of("finitewiden", count, d, nq, special));
        var tile = new Half[count * d];
        for (int i = 0; i < tile.Length; i++)
            tile[i] = (r.Next(8)) switch
            {
                0 => BitConverter.UInt16BitsToHalf((ushort)(r.Next(1, 0x400) | (r.Next(2) << 15))), // subnormal
                1 => r.Next(2) == 0 ? (Half)0f : BitConverter.UInt16BitsToHalf(0x8000),              // +-0
                2 => r.Next(2) == 0 ? Half.MaxValue : Half.MinValue,
                _ => (Half)(r.NextDouble() * 4 - 2),
            };
        // 1: an inf, 2: a NaN, at a random place (half the time among the last keys)
        if (special > 0)
        {
            int at = r.Next(2) == 0 ? r.Next(tile.Length) : tile.Length - 1 - r.Next(Math.Min(tile.Length, d));
            tile[at] = special == 1 ? (r.Next(2) == 0 ? Half.PositiveInfinity : Half.NegativeInfinity) : Half.NaN;
        }
        var q = Enumerable.Range(0, nq * d).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var scores = AssertDecodeKernelsEqualPerRow(tile, count, d, q, nq, r);
        if (special > 0) Assert.Contains(scores, x => !float.IsFinite(x));
    }

    /// <summary>The finiteness check against a scalar statement of it, at every length around the 32-value steps and
    /// with the one inf/NaN at every position of a short tile.</summary>
    [Avx512Fact("HalfTileMath is the AVX-512 f16 kernel")]
    public unsafe void AllFiniteFindsEveryInfAndNaN()
    {
        var r = new Random(TestSeeds.Of("allfinite"));
        for (int n = 0; n <= 100; n++)
        {
            var t = Enumerable.Range(0, n).Select(_ => (Half)(r.NextDouble() * 200 - 100)).ToArray();
            fixed (Half* p = t) Assert.True(HalfTileMath.AllFinite((ushort*)p, n), $"{n} finite values");
            // A value past the first n is not looked at.
            var longer = t.Append(Half.NaN).ToArray();
            fixed (Half* p = longer) Assert.True(HalfTileMath.AllFinite((ushort*)p, n), $"{n} finite values before a NaN");
            for (int at = 0; at < n; at++)
            {
                var saved = t[at];
                foreach (var bad in new[] { Half.PositiveInfinity, Half.NegativeInfinity, Half.NaN, BitConverter.UInt16BitsToHalf(0xFFFF) })
                {
                    t[at] = bad;
                    fixed (Half* p = t) Assert.False(HalfTileMath.AllFinite((ushort*)p, n), $"{n} values, {bad} at {at}");
                }
                t[at] = saved;
            }
        }
    }
}
