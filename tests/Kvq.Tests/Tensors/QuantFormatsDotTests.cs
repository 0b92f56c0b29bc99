using System.Runtime.Intrinsics;
using Kvq.Tensors;
using Kvq.Tensors.Quant;
using Xunit.Abstractions;

namespace Kvq.Tests.Tensors;

/// <summary>Every fused SIMD dot kernel against the scalar reference: Dequantize, then a dot in double.</summary>
public class QuantFormatsDotTests(ITestOutputHelper output)
{
    private static readonly int[] BlockCounts = [1, 2, 3, 7, 13];

    // Float sums in another order than the double reference; the K-quants also fold scales and mins in separately
    // (d·sc·Σqx − dmin·m·Σx), which can cancel. Measured worst case is 4e-8 of Σ|a·x|; a wrong layout is O(1).
    internal const double RelTol = 1e-6;

    private delegate float DotFn(GgmlType t, ReadOnlySpan<byte> src, ReadOnlySpan<float> x);

    private static IEnumerable<(string Name, DotFn Fn)> Kernels()
    {
        yield return ("public", QuantFormats.Dot);
        yield return ("scalar", QuantFormats.DotScalar);
        if (Avx512QuantLanes.IsSupported) yield return ("avx512", QuantFormats.DotSimd<Vector512<float>, Avx512QuantLanes>);
        if (Avx2QuantLanes.IsSupported) yield return ("avx2", QuantFormats.DotSimd<Vector256<float>, Avx2QuantLanes>);
    }

    [Fact]
    public void ThisMachineRunsBothSimdWidths()
    {
        // The brief's machine has AVX-512 and AVX2; if this fails elsewhere, the SIMD tests below only covered part.
        output.WriteLine($"Dot kernel: {QuantFormats.DotKernel}; avx512 {Avx512QuantLanes.IsSupported}, avx2 {Avx2QuantLanes.IsSupported}");
        Assert.True(Avx2QuantLanes.IsSupported || !System.Runtime.Intrinsics.X86.X86Base.IsSupported,
            "an x86 machine without AVX2 would leave the SIMD kernels untested");
    }

    [Theory]
    [MemberData(nameof(QuantTestData.AllBlockTypes), MemberType = typeof(QuantTestData))]
    public void SimdDotMatchesDequantizeThenDot(GgmlType type)
    {
        Assert.True(QuantFormats.HasFusedDot(type));
        var rng = new Random(1000 + (int)type);
        double worst = 0;
        foreach (int nb in BlockCounts)
        {
            for (int trial = 0; trial < 4; trial++)
            {
                int n = nb * GgmlTypeInfo.BlockSize(type);
                var blocks = QuantTestData.RandomBlocks(type, nb, rng);
                var x = QuantTestData.RandomVector(n, rng);
                var deq = new float[n];
                QuantFormats.Dequantize(type, blocks, deq);
                var (refDot, mag) = QuantTestData.DoubleDot(deq, x);
                Assert.True(mag > 0);
                foreach (var (name, fn) in Kernels())
                {
                    float got = fn(type, blocks, x);
                    double rel = Math.Abs(got - refDot) / mag;
                    worst = Math.Max(worst, rel);
                    Assert.True(rel <= RelTol,
                        $"{type} {name} kernel, {nb} blocks, trial {trial}: {got} vs reference {refDot} (|err|/Σ|ax| = {rel:E2})");
                }
            }
        }
        output.WriteLine($"{type}: worst |err| / Σ|a·x| = {worst:E2}");
    }

    [Theory]
    [MemberData(nameof(QuantTestData.AllBlockTypes), MemberType = typeof(QuantTestData))]
    public void RowKernelsAndWeightMatrixUseTheFusedDot(GgmlType type)
    {
        var rng = new Random(2000 + (int)type);
        const int rows = 37, cols = 3 * 256, tokens = 3;
        int rowBytes = (int)GgmlTypeInfo.RowBytes(type, cols);
        var data = QuantTestData.RandomBlocks(type, rows * cols / GgmlTypeInfo.BlockSize(type), rng);
        var w = WeightMatrix.FromBytes("w", rows, cols, type, data);
        w.ExactActivations = true; // the f32 product; the default 8-bit activations: ActivationQuantTests
        var x = QuantTestData.RandomVector(tokens * cols, rng);

        var y = new float[rows];
        w.MatVec(x.AsSpan(0, cols), y, new Parallelism(2));
        var yy = new float[tokens * rows];
        w.MatMul(x, yy, tokens, new Parallelism(2));

        var row = new float[cols];
        for (int r = 0; r < rows; r++)
        {
            QuantFormats.Dequantize(type, data.AsSpan(r * rowBytes, rowBytes), row);
            var viaWeight = new float[cols];
            w.DequantizeRow(r, viaWeight);
            Assert.Equal(row, viaWeight);
            for (int t = 0; t < tokens; t++)
            {
                var (d, mag) = QuantTestData.DoubleDot(row, x.AsSpan(t * cols, cols));
                Assert.True(Math.Abs(yy[t * rows + r] - d) <= RelTol * mag, $"{type} MatMul row {r} token {t}");
                if (t == 0) Assert.True(Math.Abs(y[r] - d) <= RelTol * mag, $"{type} MatVec row {r}");
            }
        }
    }

    [Fact]
    public void RejectsRowsThatDoNotFit()
    {
        var blocks = new byte[GgmlTypeInfo.TypeSize(GgmlType.Q4_0) * 2];
        Assert.Throws<ArgumentException>(() => QuantFormats.Dot(GgmlType.Q4_0, blocks, new float[96]));  // 3 blocks, 2 given
        Assert.Throws<ArgumentException>(() => QuantFormats.Dot(GgmlType.Q4_0, blocks, new float[33]));  // not whole blocks
        Assert.Throws<ArgumentException>(() => QuantFormats.Dequantize(GgmlType.Q6_K, new byte[209], new float[256]));
        Assert.Throws<NotSupportedException>(() => QuantFormats.Dot(GgmlType.Q2_K, new byte[84], new float[256]));
        Assert.Throws<NotSupportedException>(() => QuantFormats.Dequantize(GgmlType.F16, new byte[64], new float[32]));
        Assert.False(QuantFormats.HasFusedDot(GgmlType.F32));
        Assert.False(QuantFormats.HasFusedDot(GgmlType.Q3_K));
    }

    [Fact]
    public void EmptyRowIsZero()
    {
        foreach (var t in QuantTestData.BlockTypes)
        {
            Assert.Equal(0f, QuantFormats.Dot(t, ReadOnlySpan<byte>.Empty, ReadOnlySpan<float>.Empty));
            QuantFormats.Dequantize(t, ReadOnlySpan<byte>.Empty, Span<float>.Empty);
        }
    }
}
