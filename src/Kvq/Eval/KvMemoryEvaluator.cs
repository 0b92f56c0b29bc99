using Kvq.Cache;
using Kvq.Cache.Layout;

namespace Kvq.Eval;

/// <summary>
/// KV memory measured on real caches, no model run: a sequence of ctx tokens is filled with seeded random keys and
/// values through <see cref="IKvSequence"/> (BeginChunk, Append for every layer, Commit), as the model would, and its
/// <see cref="PagedKvSequence.Memory"/> is read and set beside the figure of its <see cref="KvLayoutPlan"/>.
/// </summary>
public static class KvMemoryEvaluator
{
    private const int Chunk = 64;

    public static KvMemoryRow Measure(KvShape shape, KvCacheConfig config, int ctx, long weightsBytes = 0, int seed = 1,
        CancellationToken cancel = default)
    {
        if (ctx < 1) throw new ArgumentException($"context {ctx}: need at least 1 token");
        var plan = KvLayoutPlan.Build(shape, config);
        var cache = new PagedKvCache(plan, maxTokens: ctx);
        using var seq = cache.CreateSequence();
        Fill(seq, shape, ctx, seed, cancel);
        var mem = seq.Memory();
        long layout = plan.BlockBytesAt(ctx);   // sliding-window rings: only the blocks their windows still see
        var all = mem.Keys + mem.Values;
        return new KvMemoryRow(config.Name, ctx, mem.TotalBytes, layout, mem.StagingBytes, cache.HeldBytes, all.Codes, all.Scales,
            all.Zeros, all.Outliers + all.Indices, all.Residual, mem.BitsPerElement, mem.BytesPerToken,
            2L * ctx * shape.Layers * shape.KvDim * 2, weightsBytes);
    }

    /// <summary>Appends <paramref name="ctx"/> tokens of random K and V (normal, sigma 1, a few channels x8 as real keys
    /// have) to every layer, chunk by chunk.</summary>
    public static void Fill(IKvSequence seq, KvShape shape, int ctx, int seed, CancellationToken cancel = default)
    {
        var rng = new Random(seed);
        var ids = new int[Chunk];
        var k = new float[Chunk * shape.KvDim];
        var v = new float[Chunk * shape.KvDim];
        for (int done = 0; done < ctx;)
        {
            cancel.ThrowIfCancellationRequested();
            int n = Math.Min(Chunk, ctx - done);
            for (int i = 0; i < n; i++) ids[i] = rng.Next(1, 1000);
            seq.BeginChunk(ids.AsSpan(0, n));
            for (int l = 0; l < shape.Layers; l++)
            {
                for (int i = 0; i < n * shape.KvDim; i++)
                {
                    float outlier = i % shape.HeadDim < 2 ? 8f : 1f;
                    k[i] = (float)Gaussian(rng) * outlier;
                    v[i] = (float)Gaussian(rng);
                }
                seq.Append(l, k.AsSpan(0, n * shape.KvDim), v.AsSpan(0, n * shape.KvDim), n);
            }
            seq.Commit(n);
            done += n;
        }
    }

    private static double Gaussian(Random rng) =>
        Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
