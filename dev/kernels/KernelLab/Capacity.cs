using Kvq.Cuda;
using Kvq.Cuda.Attention;

namespace Kvq.KernelLab;

/// <summary>
/// The long-context runs of a LLaMA-7B-shaped model: a KV cache of every layer (32 KV heads x 128, one sequence)
/// filled on the device with <c>tokens</c> tokens in one format, then decode steps: attention over every layer, and,
/// with <see cref="SevenB"/> weights resident, the weights' products too. Any token count (1,000,000 too: the arrays
/// are padded to whole 256-token chunks). Says before building what the cache will take (exact: the per-layer
/// arrays of <see cref="NuqLayerCache.BytesFor"/> / <see cref="F16LayerCache.BytesFor"/>) against what is free
/// (cuMemGetInfo), then builds it anyway, so that "does not fit" is the device's word; a cache that fails gives back
/// everything it took. Reports device memory in use, KV and weights GiB, attention and full-token times.
/// </summary>
public static class Capacity
{
    private const double GiB = 1L << 30;

    public static void Run(DecodeKernels kernels, DecodeAttention attn, Dictionary<string, NuqLayerProfile> profiles,
        string format, long tokens, int layers, int steps, StreamWriter? json, SevenB? model)
    {
        var ctx = kernels.Context;
        var shape = new DecodeShape(32, 1);
        var (free0, total) = ctx.MemoryInfo();
        long perLayerF16 = F16LayerCache.BytesFor(shape, tokens);
        var layout = LabOptions.Layout(format);
        long perLayer = format == "f16" ? perLayerF16 : NuqLayerCache.BytesFor(shape, profiles[format].Bits, tokens, LabOptions.Sink, layout);
        long need = perLayer * layers;
        double weights = (model?.WeightBytes ?? 0) / GiB;
        Console.WriteLine($"capacity {format} x {tokens} tokens x {layers} layers: needs {need / GiB:F2} GiB of KV ({perLayer} B per layer, " +
            $"{perLayer / (double)(DecodeShape.Padded(tokens) * shape.KvHeads):F1} B per token and KV head); free before {free0 / GiB:F2} GiB of {total / GiB:F2} " +
            $"(weights {weights:F2} GiB resident): {(need < free0 ? "should fit" : "will not fit")} by the plan");
        var caches = new List<GpuLayerCache>();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            for (int l = 0; l < layers; l++)
                caches.Add(format == "f16"
                    ? new F16LayerCache(kernels, shape, tokens, LabOptions.SeedK + (uint)l * 7919u, LabOptions.SeedV + (uint)l * 7919u, Math.Log2(10000))
                    : new NuqLayerCache(kernels, shape, profiles[format], tokens, LabOptions.Sink,
                        LabOptions.SeedK + (uint)l * 7919u, LabOptions.SeedV + (uint)l * 7919u, layout));
        }
        catch (CudaException e) when (e.Code == 2)
        {
            long made = caches.Sum(c => c.DeviceBytes);
            foreach (var c in caches) c.Dispose();
            ctx.Synchronize();
            var (freeAfter, _) = ctx.MemoryInfo();
            Console.WriteLine($"capacity {format} x {tokens} tokens: does not fit: layer {caches.Count} of {layers} failed ({e.Message}) with " +
                $"{made / GiB:F2} GiB of KV made; {format} needs {need / GiB:F2} GiB of KV + {weights:F2} GiB of weights; all freed again: " +
                $"{freeAfter / GiB:F2} GiB free (before: {free0 / GiB:F2})");
            json?.WriteLine($"{{\"kind\":\"capacity\",\"cache\":\"{format}\",\"tokens\":{tokens},\"layers\":{layers},\"fits\":false,\"layers_made\":{caches.Count}," +
                $"\"need_bytes\":{need},\"weight_bytes\":{model?.WeightBytes ?? 0},\"free_before\":{free0},\"free_after\":{freeAfter},\"total_bytes\":{total}}}");
            return;
        }
        ctx.Synchronize();
        double fillS = sw.Elapsed.TotalSeconds;
        var (free1, _) = ctx.MemoryInfo();
        long cacheBytes = caches.Sum(c => c.DeviceBytes);
        var rng = new Random(5);
        var q = new float[32 * 128];
        for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() * 2 - 1);
        using var qd = ctx.Upload(q);
        using var outd = ctx.Allocate(32 * 128 * 4);
        // One decode step = attention over every layer (the layers' queries would differ; the cost does not).
        double us = LabTimer.MedianMicroseconds(_ => { foreach (var c in caches) attn.Run(c, qd, outd); }, 1, steps);
        bool finite = outd.Download<float>(32 * 128).All(float.IsFinite);
        Console.WriteLine($"capacity {format} x {tokens} tokens x {layers} layers: filled in {fillS:F1} s; KV cache {cacheBytes / GiB:F2} GiB " +
            $"({cacheBytes / (double)(layers * tokens * 32L * 128 * 2):F3} bytes per element incl. padding and sink); device in use {(total - free1) / GiB:F2} GiB of {total / GiB:F2} ({free1 / GiB:F2} free, cuMemGetInfo); " +
            $"attention over {layers} layers: {us / 1000:F2} ms per token ({1e6 / us:F1} tok/s, attention only); outputs finite: {finite}; f16 would need {layers * perLayerF16 / GiB:F1} GiB");
        double gemm = 0, full = 0;
        if (model != null)
        {
            gemm = LabTimer.MedianMicroseconds(_ => { for (int l = 0; l < layers; l++) model.Layer(l); model.Head(); }, 2, steps);
            full = LabTimer.MedianMicroseconds(_ =>
            {
                for (int l = 0; l < layers; l++) { model.Layer(l); attn.Run(caches[l], qd, outd); }
                model.Head();
            }, 1, steps);
            Console.WriteLine($"capacity {format} x {tokens} tokens: one decode token, weights' products only {gemm / 1000:F2} ms; products + attention " +
                $"{full / 1000:F2} ms = {1e6 / full:F2} tok/s (norms, RoPE, SwiGLU, residuals not run); weights {model.WeightBytes / GiB:F2} GiB resident; " +
                $"KV {cacheBytes / GiB:F2} GiB; device in use {(total - free1) / GiB:F2} GiB of {total / GiB:F2}");
        }
        json?.WriteLine($"{{\"kind\":\"capacity\",\"cache\":\"{format}\",\"tokens\":{tokens},\"layers\":{layers},\"fits\":true,\"cache_bytes\":{cacheBytes},\"need_bytes\":{need},\"weight_bytes\":{model?.WeightBytes ?? 0},\"used_bytes\":{total - free1},\"total_bytes\":{total},\"attn_step_us\":{us:F1},\"gemm_us\":{gemm:F1},\"step_us\":{full:F1},\"kv_gib\":{cacheBytes / GiB:F2},\"weights_gib\":{(model?.WeightBytes ?? 0) / GiB:F2},\"used_gib\":{(total - free1) / GiB:F2},\"tok_s\":{(full > 0 ? 1e6 / full : 1e6 / us):F2},\"finite\":{(finite ? "true" : "false")}}}");
        foreach (var c in caches) c.Dispose();
    }
}
