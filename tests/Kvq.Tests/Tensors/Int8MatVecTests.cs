using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Tests.Tensors;

/// <summary>
/// <see cref="Int8MatVec"/> (the AVX-512BW Q8_0/Q4_0/Q5_0 decode products) against the scalar integer reference
/// (<see cref="Q8Dot.DotScalar"/>) and a double-precision dot, at odd sizes: blocks not a multiple of its pair/quad or
/// of its eight-block scale groups, rows not a multiple of its four-row sums; and through <see cref="WeightMatrix"/>:
/// MatVecRows bit for bit MatVec, both near the float path.
/// </summary>
public unsafe class Int8MatVecTests
{
    public static TheoryData<GgmlType> Types() => new([GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q5_0]);

    private static float[] Activations(int n, Random rng)
    {
        var x = QuantTestData.RandomGaussian(n, rng, sigma: 0.7f);
        for (int i = 0; i < n / 50 + 1; i++) x[rng.Next(n)] *= 9;
        return x;
    }

    /// <summary>Random blocks with the edge cases a file may hold: Q8_0 codes -128, zero and subnormal f16 scales.</summary>
    private static byte[] Weights(GgmlType type, int rows, int nb, Random rng)
    {
        int ts = GgmlTypeInfo.TypeSize(type);
        var data = QuantTestData.RandomBlocks(type, rows * nb, rng);
        for (int b = 0; b < rows * nb; b++)
        {
            if (type == GgmlType.Q8_0) data[b * ts + 2 + rng.Next(32)] = 0x80;
            int kind = rng.Next(8);
            if (kind == 0) { data[b * ts] = 0; data[b * ts + 1] = 0; }                               // d = 0
            else if (kind == 1) { data[b * ts] = (byte)rng.Next(1, 256); data[b * ts + 1] = (byte)(rng.Next(4) | (rng.Next(2) << 7)); } // subnormal d
        }
        return data;
    }

    [Avx512Theory("Int8MatVec is the AVX-512BW path")]
    [MemberData(nameof(Types))]
    public void RowsMatchScalarReference(GgmlType type)
    {
        int seed = 2300 + (int)type;
        var rng = new Random(seed);
        int ts = GgmlTypeInfo.TypeSize(type);
        foreach (int nb in new[] { 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 32, 35 })
            foreach (int rows in new[] { 1, 3, 4, 6, 9 })
            {
                int cols = 32 * nb;
                var w = Weights(type, rows, nb, rng);
                var x = Activations(cols, rng);
                if (nb > 2) x.AsSpan(32, 32).Clear(); // an all-zero activation block: d_x 0
                var xq = new byte[GgmlTypeInfo.RowBytes(GgmlType.Q8_0, cols)];
                ActivationQuant.Quantize(GgmlType.Q8_0, x, xq);
                var xr = new float[cols];
                ActivationQuant.Decode(GgmlType.Q8_0, xq, xr);
                var prepared = GC.AllocateUninitializedArray<byte>(Int8MatVec.PreparedBytes(cols) + 64, pinned: true);
                var y = new float[rows + 1];
                y[rows] = 12345f; // past the last row: must stay untouched
                fixed (byte* pw = w)
                fixed (byte* px = xq)
                fixed (byte* pp = prepared)
                fixed (float* py = y)
                {
                    byte* aligned = (byte*)(((nint)pp + 63) & ~(nint)63);
                    Int8MatVec.Prepare(type, x, aligned);
                    var scales = Int8MatVec.ScaleCopy(type, pw, nb * ts, rows, nb);
                    fixed (ushort* ps = scales) Int8MatVec.Rows(type, pw, nb * ts, ps, rows, nb, aligned, py);
                    var deq = new float[cols];
                    for (int r = 0; r < rows; r++)
                    {
                        // Q8Dot has no Q5_0 kernel: there the double dot of the dequantized row is the reference.
                        float scalar = Q8Dot.Handles(type) ? Q8Dot.DotScalar(type, pw + r * nb * ts, px, nb) : y[r];
                        QuantFormats.Dequantize(type, w.AsSpan(r * nb * ts, nb * ts), deq);
                        var (d, mag) = QuantTestData.DoubleDot(deq, xr);
                        Assert.True(Math.Abs(y[r] - d) <= 1e-6 * mag + 1e-30,
                            $"seed {seed}, {type}, {nb} blocks, row {r} of {rows}: fast {y[r]} vs double {d} (scalar {scalar})");
                        Assert.True(Math.Abs(y[r] - scalar) <= 2e-6 * mag + 1e-30,
                            $"seed {seed}, {type}, {nb} blocks, row {r} of {rows}: fast {y[r]} vs scalar {scalar}");
                    }
                }
                Assert.Equal(12345f, y[rows]);
            }
    }

    [Avx512Theory("Int8MatVec is the AVX-512BW path")]
    [MemberData(nameof(Types))]
    public void NonFiniteScaleGivesNonFiniteRow(GgmlType type)
    {
        var rng = new Random(2310);
        int nb = 12, ts = GgmlTypeInfo.TypeSize(type), cols = 32 * nb;
        var w = QuantTestData.RandomBlocks(type, 2 * nb, rng);
        BitConverter.TryWriteBytes(w.AsSpan(5 * ts, 2), BitConverter.HalfToUInt16Bits(Half.PositiveInfinity)); // row 0, block 5
        BitConverter.TryWriteBytes(w.AsSpan((nb + 9) * ts, 2), BitConverter.HalfToUInt16Bits(Half.NaN));       // row 1, block 9
        var x = Activations(cols, rng);
        var prepared = GC.AllocateUninitializedArray<byte>(Int8MatVec.PreparedBytes(cols) + 64, pinned: true);
        var y = new float[2];
        fixed (byte* pw = w)
        fixed (byte* pp = prepared)
        fixed (float* py = y)
        {
            byte* aligned = (byte*)(((nint)pp + 63) & ~(nint)63);
            Int8MatVec.Prepare(type, x, aligned);
            var scales = Int8MatVec.ScaleCopy(type, pw, nb * ts, 2, nb);
            fixed (ushort* ps = scales) Int8MatVec.Rows(type, pw, nb * ts, ps, 2, nb, aligned, py);
        }
        Assert.False(float.IsFinite(y[0]), $"{type}: an inf scale gave {y[0]}");
        Assert.True(float.IsNaN(y[1]), $"{type}: a NaN scale gave {y[1]}");
    }

    [Avx512Theory("Int8MatVec is the AVX-512BW path")]
    [MemberData(nameof(Types))]
    public void WeightMatrixRowsEqualMatVecAndFloatPath(GgmlType type)
    {
        int seed = 2320 + (int)type;
        var rng = new Random(seed);
        const int rows = 67, cols = 32 * 13, n = 3;
        var w = WeightMatrix.FromBytes("w", rows, cols, type, QuantTestData.RandomBlocks(type, rows * cols / 32, rng));
        var reference = WeightMatrix.FromBytes("ref", rows, cols, type, new ReadOnlySpan<byte>(w.Data, (int)w.ByteSize));
        reference.IntegerDots = false; // the float kernels over the round-tripped activations
        var x = Activations(n * cols, rng);
        using var par = new Parallelism(2);
        var batched = new float[n * rows];
        w.MatVecRows(x, batched, n, par);
        for (int t = 0; t < n; t++)
        {
            var one = new float[rows];
            var slow = new float[rows];
            w.MatVec(x.AsSpan(t * cols, cols), one, par);
            reference.MatVec(x.AsSpan(t * cols, cols), slow, par);
            for (int r = 0; r < rows; r++)
            {
                Assert.True(batched[t * rows + r] == one[r], $"seed {seed}, {type}: row {r}, vector {t}: MatVecRows {batched[t * rows + r]} vs MatVec {one[r]}");
                Assert.True(Math.Abs(one[r] - slow[r]) <= 1e-5f * (1 + Math.Abs(slow[r])), $"seed {seed}, {type}: row {r}: {one[r]} vs float path {slow[r]}");
            }
        }
    }
}
