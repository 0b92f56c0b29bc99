using Kvq.Cache.Attention;

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
    }
}
