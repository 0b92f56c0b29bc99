using Kvq.Calibration.Fisher;
using Kvq.Tensors;
using Kvq.Tensors.Quant;
using static Kvq.Tests.Calibration.Fisher.GradientCheck;

namespace Kvq.Tests.Calibration.Fisher;

/// <summary>dX += G W against its double-precision scalar twin and against the forward product (adjoint identity).</summary>
public class TransposedProductTests
{
    internal static WeightMatrix Matrix(GgmlType type, int rows, int cols, int seed)
    {
        var values = RandomFloats(new Random(seed), rows * cols);
        if (type == GgmlType.F32) return WeightMatrix.FromFloats("w", rows, cols, values);
        var bytes = new byte[GgmlTypeInfo.RowBytes(type, cols) * rows];
        if (type == GgmlType.F16)
        {
            for (int i = 0; i < values.Length; i++) BitConverter.TryWriteBytes(bytes.AsSpan(2 * i), (Half)values[i]);
        }
        else if (!QuantFormats.CanQuantize(type))
        {
            // K-quants have no encoder: random blocks with sane f16 scales (valid for any type with a decoder).
            bytes = Tensors.QuantTestData.RandomBlocks(type, rows * cols / GgmlTypeInfo.BlockSize(type), new Random(seed));
        }
        else
        {
            long rb = GgmlTypeInfo.RowBytes(type, cols);
            for (int r = 0; r < rows; r++)
                QuantFormats.Quantize(type, values.AsSpan(r * cols, cols), bytes.AsSpan((int)(r * rb), (int)rb));
        }
        return WeightMatrix.FromBytes("w", rows, cols, type, bytes);
    }

    [Theory]
    [InlineData(GgmlType.F32, 13, 7, 1)]
    [InlineData(GgmlType.F32, 1, 1, 1)]
    [InlineData(GgmlType.F32, 66, 35, 70)]   // rows not a multiple of 4, tokens across three tiles
    [InlineData(GgmlType.F16, 7, 33, 5)]
    [InlineData(GgmlType.F16, 130, 96, 33)]
    [InlineData(GgmlType.Q8_0, 11, 64, 9)]
    [InlineData(GgmlType.Q4_K, 6, 256, 40)]
    public void Matches_the_double_reference(GgmlType type, int rows, int cols, int n)
    {
        var w = Matrix(type, rows, cols, seed: rows * 7 + cols);
        var rng = new Random(n);
        var g = RandomFloats(rng, n * rows);
        if (g.Length > 1) g[0] = 0;   // zero gradients are skipped in groups of four: keep one in
        var before = RandomFloats(rng, n * cols);
        var expected = (float[])before.Clone();
        TransposedProduct.AddToReference(w, g, expected, n);
        var increment = new double[expected.Length];   // compare what was added, normwise: K-quant values are tiny
        for (int i = 0; i < increment.Length; i++) increment[i] = (double)expected[i] - before[i];
        foreach (var threads in new[] { 1, 2, 3 })
        {
            var actual = (float[])before.Clone();
            TransposedProduct.AddTo(w, g, actual, n, new Parallelism(threads));
            var added = new float[actual.Length];
            for (int i = 0; i < added.Length; i++) added[i] = actual[i] - before[i];
            double err = NormwiseError(added, increment);
            Assert.True(err < 1e-5, $"{type} {rows}x{cols} n={n} threads={threads}: error {err:E2}");
        }
    }

    [Theory]
    [InlineData(GgmlType.F16, 9, 40, 3)]
    [InlineData(GgmlType.Q4_0, 5, 64, 4)]
    public void Is_the_adjoint_of_MatMul(GgmlType type, int rows, int cols, int n)
    {
        // <W x, g> = <x, W^T g>: the transposed product reads the same matrix the forward pass multiplies by.
        var w = Matrix(type, rows, cols, seed: 11);
        w.ExactActivations = true; // the adjoint of the product itself, not of the 8-bit activation rounding before it
        var rng = new Random(12);
        var x = RandomFloats(rng, n * cols);
        var g = RandomFloats(rng, n * rows);
        var y = new float[n * rows];
        w.MatMul(x, y, n, Parallelism.Single);
        var dx = new float[n * cols];
        TransposedProduct.AddTo(w, g, dx, n, Parallelism.Single);
        double lhs = 0, rhs = 0;
        for (int i = 0; i < y.Length; i++) lhs += (double)y[i] * g[i];
        for (int i = 0; i < dx.Length; i++) rhs += (double)x[i] * dx[i];
        Assert.True(Math.Abs(lhs - rhs) < 1e-4 * Math.Max(1, Math.Abs(lhs)), $"{lhs} vs {rhs}");
    }

    [Fact]
    public void Rejects_short_buffers()
    {
        var w = Matrix(GgmlType.F32, 4, 3, 1);
        var e = Assert.Throws<ArgumentException>(() => TransposedProduct.AddTo(w, new float[7], new float[6], 2, Parallelism.Single));
        Assert.Contains("4x3", e.Message);
    }
}
