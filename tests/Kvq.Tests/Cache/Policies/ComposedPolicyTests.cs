using Kvq.Cache;
using Kvq.Cache.Policies;
using Kvq.Tensors;

namespace Kvq.Tests.Cache.Policies;

/// <summary>compose:A+B shares the budget: A's own top share, then B's top among the rest (checked by key norms).</summary>
public class ComposedPolicyTests
{
    [Theory]
    [InlineData("compose:streaming:sink=0+knorm", 10, 5)]
    [InlineData("compose:share=0.3,streaming:sink=0+knorm", 10, 3)]
    [InlineData("compose:share=1,streaming:sink=0+knorm", 7, 7)]
    public void FirstKeepsItsShareSecondTheRest(string spec, int budget, int recent)
    {
        var shape = new KvShape(1, 2, 2, 8, new Rope(8, 8, 10000f, 1f, RopeStyle.Normal));
        var cache = new PagedKvCache(shape, new KvCacheConfig("f32", "f32", 4,
            Policy: new KvPolicyConfig(KvPolicyRegistry.Parse(spec), new KvBudget(budget))));
        using var seq = cache.CreateSequence();
        const int n = 31;
        var rng = new Random(budget * 100 + recent);
        var k = new float[n * shape.KvDim];
        for (int i = 0; i < k.Length; i++) k[i] = (float)(rng.NextDouble() * 2 - 1) * (1 + (i / 8 * 7919 % 13));
        var v = new float[n * shape.KvDim];
        seq.BeginChunk(new int[n]);
        seq.Append(0, k, v, n);
        seq.Attend(0, new float[n * shape.QDim], n, new float[n * shape.QDim], new Parallelism(1));
        seq.Commit(n);
        for (int h = 0; h < shape.KvHeads; h++)
        {
            // The last `recent` positions, then the lowest key norms among the others.
            var expect = new SortedSet<int>(Enumerable.Range(n - recent, recent));
            var byNorm = Enumerable.Range(0, n - recent)
                .OrderBy(p => System.Numerics.Tensors.TensorPrimitives.Norm(k.AsSpan(p * shape.KvDim + h * 8, 8))).Take(budget - recent);
            foreach (var p in byNorm) expect.Add(p);
            Assert.Equal(expect.ToArray(), seq.SlotPositions(0, h).ToArray());
        }
    }
}
