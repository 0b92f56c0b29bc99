using Kvq.Tensors;

namespace Kvq.Tests.Tensors;

public class TileGemmTests
{
    [Theory]
    [InlineData(4, 64, 8)]
    [InlineData(4, 384, 13)]
    [InlineData(3, 384, 5)]
    [InlineData(4, 40, 9)]   // k not a multiple of 16: scalar path
    [InlineData(1, 16, 1)]
    public unsafe void PanelEqualsReference(int rows, int k, int n)
    {
        var r = new Random(rows * 1000 + k + n);
        var a = Enumerable.Range(0, rows * k).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var x = Enumerable.Range(0, n * k).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        int stride = rows + 3;
        var expected = new float[n * stride];
        var actual = new float[n * stride];
        TileGemm.Reference(a, rows, k, x, n, expected, stride);
        fixed (float* pa = a) fixed (float* px = x) fixed (float* py = actual) TileGemm.Panel(pa, rows, k, px, n, py, stride);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-4f * (1 + Math.Abs(expected[i])), $"{i}: {expected[i]} vs {actual[i]}");
    }

    /// <summary>MatMul (panels, any weight type) equals MatVec per token.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(64)]
    public void MatMulEqualsMatVecPerToken(int n)
    {
        var w = SharedModels.Books.Layers[0].WGate!; // f16 (1024 x 384)
        var r = new Random(n);
        var x = Enumerable.Range(0, n * w.Cols).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        var y = new float[n * w.Rows];
        w.MatMul(x, y, n, new Parallelism(2));
        var one = new float[w.Rows];
        for (int t = 0; t < n; t++)
        {
            w.MatVec(x.AsSpan(t * w.Cols, w.Cols), one, Parallelism.Single);
            for (int i = 0; i < w.Rows; i++) Assert.True(Math.Abs(one[i] - y[t * w.Rows + i]) <= 1e-4f * (1 + Math.Abs(one[i])), $"t {t} row {i}");
        }
    }
}

public class ParallelismTests
{
    private struct SumJob(long[] slots) : IRangeJob
    {
        public void Run(int start, int end)
        {
            for (int i = start; i < end; i++) Interlocked.Add(ref slots[i % slots.Length], i);
        }
    }

    private struct ThrowJob : IRangeJob
    {
        public void Run(int start, int end)
        {
            if (start > 0) throw new InvalidOperationException("boom");
        }
    }

    /// <summary>Every index runs exactly once, for many regions in a row and odd sizes, with 1..5 threads.</summary>
    [Fact]
    public void EveryIndexRunsOnceAcrossManyRegions()
    {
        foreach (int threads in new[] { 1, 2, 3, 5 })
        {
            using var par = new Parallelism(threads);
            for (int round = 0; round < 500; round++)
            {
                int count = 1 + round % 97;
                var slots = new long[count];
                var job = new SumJob(slots);
                par.For(count, 1, ref job);
                for (int i = 0; i < count; i++) Assert.Equal(i, slots[i]);
            }
        }
    }

    /// <summary>Regions separated by pauses longer than the workers' polling, so they go to sleep and are woken (or
    /// the caller takes their pieces): every index still runs exactly once.</summary>
    [Fact]
    public void EveryIndexRunsOnceWhenWorkersSleepBetweenRegions()
    {
        foreach (int threads in new[] { 2, 3 })
        {
            using var par = new Parallelism(threads);
            for (int round = 0; round < 60; round++)
            {
                if (round % 3 == 0) Thread.Sleep(1 + Parallelism.SpinMicroseconds / 1000);
                int count = 7 + round;
                var slots = new long[count];
                var job = new SumJob(slots);
                par.For(count, 1, ref job);
                for (int i = 0; i < count; i++) Assert.Equal(i, slots[i]);
            }
        }
    }

    [Fact]
    public void AWorkerExceptionReachesTheCaller()
    {
        using var par = new Parallelism(3);
        var job = new ThrowJob();
        Assert.Throws<AggregateException>(() => par.For(30, 1, ref job));
        var slots = new long[10];
        var ok = new SumJob(slots);
        par.For(10, 1, ref ok); // still usable afterwards
        Assert.Equal(9, slots[9]);
    }
}
