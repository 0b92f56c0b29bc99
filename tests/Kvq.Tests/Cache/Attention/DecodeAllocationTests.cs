using Kvq.Cache;
using Kvq.Eval;
using Kvq.Tensors;

namespace Kvq.Tests.Cache.Attention;

/// <summary>A decode step (one token: append to every layer, attend, commit) allocates nothing on the calling thread once
/// warm, with and without split-K, for per-token and staging formats.</summary>
public sealed class DecodeAllocationTests
{
    [Theory]
    [InlineData("f16", 1)]
    [InlineData("f16", 4)]
    [InlineData("q4_0", 4)]
    [InlineData("int4-ch/int4", 4)]
    [InlineData("kivi2", 1)]
    [InlineData("kivi2", 4)]
    public void DecodeStepAllocatesNothing(string spec, int threads)
    {
        // One KV head: fewer work items than threads, so with 4 threads the 20 blocks are split (split-K) and merged.
        var shape = new KvShape(2, 1, 4, 64, new Rope(64, 64, 10000f, 1f, RopeStyle.Normal));
        var cache = new PagedKvCache(shape, KvCacheConfig.Parse(spec) with { SinkTokens = 1 });
        using var seq = cache.CreateSequence();
        // 610 tokens: the steps below stay inside block 19 (608..639), so no block fills, registers or seals.
        KvMemoryEvaluator.Fill(seq, shape, 610, seed: 3);
        using var par = new Parallelism(threads);
        var rng = new Random(5);
        var k = new float[shape.KvDim];
        var v = new float[shape.KvDim];
        var q = new float[shape.QDim];
        var o = new float[shape.QDim];
        var token = new int[1];
        foreach (var a in new[] { k, v, q }) for (int i = 0; i < a.Length; i++) a[i] = (float)rng.NextDouble() - 0.5f;

        void Step()
        {
            seq.BeginChunk(token);
            for (int l = 0; l < shape.Layers; l++)
            {
                seq.Append(l, k, v, 1);
                seq.Attend(l, q, 1, o, par);
            }
            seq.Commit(1);
        }

        for (int i = 0; i < 3; i++) Step();
        // Which thread runs which chunk varies (the caller takes chunks a worker has not started), so a path's one-time
        // runtime setup can land in any round on this thread. A per-step allocation shows in every round; one-time
        // costs do not: some round of 8 steps must allocate nothing.
        var rounds = new List<long>();
        for (int round = 0; round < 4 && (rounds.Count == 0 || rounds[^1] != 0); round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 8; i++) Step();
            rounds.Add(GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.True(rounds[^1] == 0, $"bytes allocated per round of 8 decode steps: {string.Join(", ", rounds)}");
        Assert.All(o, x => Assert.True(float.IsFinite(x)));
    }
}
