using System.Diagnostics;
using System.Runtime.Intrinsics;
using Kvq.Tensors;
using Kvq.Tensors.Quant;
using Xunit.Abstractions;

namespace Kvq.Tests.Tensors;

/// <summary>
/// A quick look at kernel speed, not a benchmark: no timing is asserted (real numbers belong to `kvq bench` /
/// BenchmarkDotNet). It prints single-thread mat-vec throughput per type next to F16 and the scalar fallback, measured
/// in the same run, and checks that the results agree, so it still fails on wrong answers.
/// </summary>
public class QuantKernelSpeedSanityTests(ITestOutputHelper output)
{
    private const int Rows = 256, Cols = 2048, Reps = 12;

    [Fact]
    public void PrintsMatVecThroughputPerType()
    {
        var rng = new Random(8);
        var x = QuantTestData.RandomVector(Cols, rng);
        var y = new float[Rows];
        output.WriteLine($"single thread, {Rows}x{Cols} mat-vec, best of {Reps}; kernel {QuantFormats.DotKernel}");

        var f16 = new Half[Rows * Cols];
        for (int i = 0; i < f16.Length; i++) f16[i] = (Half)(rng.NextSingle() - 0.5f);
        var wf16 = WeightMatrix.FromBytes("f16", Rows, Cols, GgmlType.F16, System.Runtime.InteropServices.MemoryMarshal.AsBytes(f16.AsSpan()));
        double f16Ns = Time(() => wf16.MatVec(x, y, Parallelism.Single));
        output.WriteLine($"  F16   {f16Ns / (Rows * Cols):F3} ns/value  {wf16.ByteSize / f16Ns:F1} GB/s");

        foreach (var type in QuantTestData.BlockTypes)
        {
            var data = QuantTestData.RandomBlocks(type, Rows * Cols / GgmlTypeInfo.BlockSize(type), rng);
            var w = WeightMatrix.FromBytes("w", Rows, Cols, type, data);
            w.ExactActivations = true; // the fused f32 kernels themselves (8-bit activations: ActivationQuantTests)
            double ns = Time(() => w.MatVec(x, y, Parallelism.Single));
            int rb = (int)w.RowBytes;
            double scalarNs = Time(() =>
            {
                for (int r = 0; r < Rows; r++) y[r] = QuantFormats.DotScalar(type, data.AsSpan(r * rb, rb), x);
            });
            string avx2 = "";
            if (Avx512QuantLanes.IsSupported && Avx2QuantLanes.IsSupported)
            {
                double avx2Ns = Time(() =>
                {
                    for (int r = 0; r < Rows; r++) y[r] = QuantFormats.DotSimd<Vector256<float>, Avx2QuantLanes>(type, data.AsSpan(r * rb, rb), x);
                });
                avx2 = $", avx2 path {avx2Ns / ns:F2}x the time";
            }
            w.MatVec(x, y, Parallelism.Single);
            var row = new float[Cols];
            for (int r = 0; r < Rows; r += 17)
            {
                w.DequantizeRow(r, row);
                var (d, mag) = QuantTestData.DoubleDot(row, x);
                Assert.True(Math.Abs(y[r] - d) <= QuantFormatsDotTests.RelTol * mag, $"{type} row {r}");
            }
            output.WriteLine($"  {type,-5} {ns / (Rows * Cols):F3} ns/value  {w.ByteSize / ns:F1} GB/s  " +
                             $"{ns / f16Ns:F2}x F16's time, scalar fallback {scalarNs / ns:F1}x slower{avx2}");
        }
    }

    [Fact]
    public void PrintsEncoderThroughput()
    {
        var rng = new Random(9);
        var x = QuantTestData.RandomGaussian(64 * 1024, rng, 0.1f);
        foreach (var type in new[] { GgmlType.Q8_0, GgmlType.Q4_0 })
        {
            var a = new byte[GgmlTypeInfo.RowBytes(type, x.Length)];
            var b = new byte[a.Length];
            double fast = Time(() => QuantFormats.Quantize(type, x, a));
            double reference = Time(() => QuantFormats.QuantizeReference(type, x, b));
            Assert.Equal(b, a);
            output.WriteLine($"  encode {type}: {fast / x.Length:F3} ns/value, reference {reference / fast:F1}x slower");
        }
    }

    /// <summary>Best wall time of <see cref="Reps"/> runs after warm-up, in nanoseconds.</summary>
    private static double Time(Action a)
    {
        for (int i = 0; i < 3; i++) a();
        double best = double.MaxValue;
        for (int i = 0; i < Reps; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            a();
            best = Math.Min(best, Stopwatch.GetElapsedTime(t0).TotalNanoseconds);
        }
        return best;
    }
}
