using System.Runtime.Intrinsics;
using Kvq.Tensors.Quant;

namespace Kvq.Tests.Tensors;

/// <summary>
/// The batched decode kernel (<see cref="HalfRowBlock"/>): every output bitwise equal to the lone f16 dot of its row
/// and vector (what a sequence decoding alone computes) and to the scalar <see cref="HalfRowBlock.Reference"/> that
/// states the order; random rows and vectors, odd sizes (tails of rows, of vectors and of columns).
/// </summary>
public sealed unsafe class HalfRowBlockTests
{
    [Avx512Theory("the AVX-512 panels are what it tests")]
    [InlineData(9, 16, 1, true)]
    [InlineData(4, 16, 4, true)]
    [InlineData(7, 48, 5, true)]     // 32 + an odd 16-column chunk
    [InlineData(13, 176, 7, false)]  // inf/NaN-capable conversion
    [InlineData(6, 183, 9, true)]    // odd chunk and a 7-column scalar tail
    [InlineData(17, 384, 16, true)]  // books-19m's width, rows not a multiple of 4
    [InlineData(5, 1000, 18, false)] // ffn-like width with an 8-column tail, vectors not a multiple of 4
    public void RowsEqualTheLoneDotBitwise(int rows, int k, int n, bool finite)
    {
        var rng = new Random(TestSeeds.Of(nameof(RowsEqualTheLoneDotBitwise), rows, k, n));
        var (w, x) = RandomData(rows, k, n, rng);
        var y = new float[n * rows];
        var scratch = new float[HalfRowBlock.ScratchFloats(k)];
        fixed (Half* pw = w)
        fixed (float* px = x, py = y)
            HalfRowBlock.Rows((byte*)pw, 2L * k, rows, k, px, n, py, rows, scratch, finite);
        AssertEqualsLone(w, x, y, rows, k, n, lanes: 16, lone: (a, v) => HalfDot.Dot(a, v));
    }

    [Avx2Theory("the AVX2 panels are what it tests")]
    [InlineData(3, 8, 1)]
    [InlineData(4, 24, 4)]    // 16 + an odd 8-column chunk
    [InlineData(7, 183, 6)]   // odd rows, odd chunk, 7-column tail, 2 vectors past the panels
    [InlineData(10, 384, 16)]
    public void Avx2RowsEqualTheAvx2LoneDotBitwise(int rows, int k, int n)
    {
        var rng = new Random(TestSeeds.Of(nameof(Avx2RowsEqualTheAvx2LoneDotBitwise), rows, k, n));
        var (w, x) = RandomData(rows, k, n, rng);
        var y = new float[n * rows];
        var scratch = new float[HalfRowBlock.ScratchFloats(k)];
        fixed (Half* pw = w)
        fixed (float* px = x, py = y)
            HalfRowBlock.RowsAvx2((byte*)pw, 2L * k, rows, k, px, n, py, rows, scratch);
        AssertEqualsLone(w, x, y, rows, k, n, lanes: 8, lone: (a, v) => HalfDot.DotAvx2(a, v));
    }

    [Avx512Fact("the AVX-512 horizontal sums are what it tests")]
    public void Sum16GivesEachVectorsSumBitwise()
    {
        var rng = new Random(TestSeeds.Of(nameof(Sum16GivesEachVectorsSumBitwise)));
        for (int trial = 0; trial < 200; trial++)
        {
            var v = new Vector512<float>[16];
            for (int j = 0; j < 16; j++)
            {
                var lanes = new float[16];
                // Magnitudes over 8 decades so that the order of the additions shows in the last bits.
                for (int l = 0; l < 16; l++) lanes[l] = (float)((rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-4, 4)));
                v[j] = Vector512.Create(lanes);
            }
            var sums = HalfRowBlock.Sum16(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]);
            for (int j = 0; j < 16; j++)
                Assert.True(BitConverter.SingleToInt32Bits(sums[j]) == BitConverter.SingleToInt32Bits(Vector512.Sum(v[j])),
                    $"trial {trial} lane {j}: Sum16 {sums[j]:R}, Vector512.Sum {Vector512.Sum(v[j]):R}");
        }
    }

    private static (Half[] W, float[] X) RandomData(int rows, int k, int n, Random rng)
    {
        var w = new Half[rows * k];
        for (int i = 0; i < w.Length; i++) w[i] = (Half)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-8, 3)));
        var x = new float[n * k];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-6, 6)));
        return (w, x);
    }

    private static void AssertEqualsLone(Half[] w, float[] x, float[] y, int rows, int k, int n, int lanes,
        Func<ReadOnlySpan<Half>, ReadOnlySpan<float>, float> lone)
    {
        var row = new float[k];
        for (int r = 0; r < rows; r++)
        {
            var wr = w.AsSpan(r * k, k);
            for (int i = 0; i < k; i++) row[i] = (float)wr[i];
            for (int t = 0; t < n; t++)
            {
                var xt = x.AsSpan(t * k, k);
                float got = y[t * rows + r], alone = lone(wr, xt), reference = HalfRowBlock.Reference(row, xt, lanes);
                Assert.True(BitConverter.SingleToInt32Bits(got) == BitConverter.SingleToInt32Bits(alone),
                    $"rows {rows} k {k} n {n}: row {r} vector {t}: batched {got:R}, lone dot {alone:R}");
                Assert.True(BitConverter.SingleToInt32Bits(got) == BitConverter.SingleToInt32Bits(reference),
                    $"rows {rows} k {k} n {n}: row {r} vector {t}: batched {got:R}, reference {reference:R}");
            }
        }
    }
}
