using Kvq.Cuda;
using Kvq.Cuda.Attention;

namespace Kvq.KernelLab;

/// <summary>
/// The long-context capacity run: a LLaMA-7B-shaped KV cache (layers x 32 KV heads x 128, one sequence) filled on
/// the device with <paramref name="tokens"/> tokens in a KVQuant format, then decode steps of attention over every
/// layer. Reports device memory in use and the attention part of a decode step; the model's GEMMs are not part of
/// this run (see docs/perf.md for what they would add).
/// </summary>
public static class Capacity
{
    public static void Run(DecodeKernels kernels, DecodeAttention attn, Dictionary<int, NuqLayerProfile> profiles,
        int bits, long tokens, int layers, int steps, StreamWriter? json)
    {
        var ctx = kernels.Context;
        var shape = new DecodeShape(32, 1);
        var (free0, total) = ctx.MemoryInfo();
        long perLayerF16 = 2L * shape.KvHeads * tokens * shape.HeadDim * 2;
        Console.WriteLine($"capacity: {layers} layers x {tokens} tokens x 32 KV heads x 128, nuq{bits}-1%; device {total / (1L << 30)} GiB, {free0 / (1L << 30)} GiB free; " +
            $"f16 would need {layers * perLayerF16 / (double)(1L << 30):F0} GiB");
        var caches = new List<GpuLayerCache>();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            for (int l = 0; l < layers; l++)
                caches.Add(new NuqLayerCache(kernels, shape, profiles[bits], tokens, LabOptions.Sink,
                    LabOptions.SeedK + (uint)l * 7919u, LabOptions.SeedV + (uint)l * 7919u));
        }
        catch (CudaException e)
        {
            Console.WriteLine($"capacity: stopped at layer {caches.Count}: {e.Message}");
            foreach (var c in caches) c.Dispose();
            return;
        }
        ctx.Synchronize();
        double fillS = sw.Elapsed.TotalSeconds;
        var (free1, _) = ctx.MemoryInfo();
        long cacheBytes = caches.Sum(c => c.DeviceBytes);
        var rng = new Random(5);
        var q = new float[32 * 128];
        for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() * 2 - 1);
        using var qd = ctx.Upload<float>(q);
        using var outd = ctx.Allocate(32 * 128 * 4);
        // One decode step = attention over every layer (the layers' queries would differ; the cost does not).
        double us = LabTimer.MedianMicroseconds(_ => { foreach (var c in caches) attn.Run(c, qd, outd); }, 1, steps);
        var check = outd.Download<float>(32 * 128);
        bool finite = check.All(float.IsFinite);
        Console.WriteLine($"capacity: filled in {fillS:F1} s; KV cache {cacheBytes / (double)(1L << 30):F2} GiB " +
            $"({cacheBytes / (double)(layers * tokens * 32L * 128 * 2):F3} bytes per element incl. padding and sink); device in use {(total - free1) / (double)(1L << 30):F2} GiB of {total / (double)(1L << 30):F0}; " +
            $"attention over {layers} layers: {us / 1000:F2} ms per token ({1e6 / us:F1} tok/s, attention only); outputs finite: {finite}");
        json?.WriteLine($"{{\"kind\":\"capacity\",\"bits\":{bits},\"tokens\":{tokens},\"layers\":{layers},\"cache_bytes\":{cacheBytes},\"used_bytes\":{total - free1},\"total_bytes\":{total},\"step_us\":{us:F1},\"f16_bytes\":{layers * perLayerF16},\"finite\":{(finite ? "true" : "false")}}}");
        foreach (var c in caches) c.Dispose();
    }
}
