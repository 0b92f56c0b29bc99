using Kvq.Cuda;

namespace Kvq.KernelLab;

/// <summary>Median device time of a launch sequence: CUDA events around each repetition after a warm-up.</summary>
public static class LabTimer
{
    public static double MedianMicroseconds(Action<int> launch, int warmup, int reps)
    {
        using var start = new CudaEvent();
        using var end = new CudaEvent();
        for (int i = 0; i < warmup; i++) launch(i);
        var times = new double[reps];
        for (int i = 0; i < reps; i++)
        {
            start.Record();
            launch(i);
            end.Record();
            end.Synchronize();
            times[i] = CudaEvent.Elapsed(start, end) * 1000.0;
        }
        Array.Sort(times);
        return times[reps / 2];
    }

    /// <summary>Device-to-device copy bandwidth (bytes read + bytes written per second) on a large buffer.</summary>
    public static double CopyBandwidth(CudaContext ctx, long bytes = 1L << 30)
    {
        using var a = ctx.Allocate(bytes);
        using var b = ctx.Allocate(bytes);
        a.Fill(1);
        double us = MedianMicroseconds(_ => b.CopyFromDevice(a), 3, 15);
        return 2.0 * bytes / (us * 1e-6);
    }
}
