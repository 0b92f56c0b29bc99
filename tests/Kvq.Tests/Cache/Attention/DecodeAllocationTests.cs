using Kvq.Cache;
using Kvq.Eval;
using Kvq.Tensors;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Attention;

/// <summary>A decode step (one token: append to every layer, attend, commit) allocates nothing on the calling thread once
/// warm, with and without split-K, for per-token and staging formats and KVQuant's (sparse outlier rows).</summary>
public sealed class DecodeAllocationTests
{
    [Theory]
    [InlineData("f16", 1)]
    [InlineData("f16", 4)]
    [InlineData("q4_0", 4)]
    [InlineData("int4-ch/int4", 4)]
    [InlineData("kivi2", 1)]
    [InlineData("kivi2", 4)]
    [InlineData("nuq4-1%", 1)]
    [InlineData("nuq3-1%:token", 4)]
    public void DecodeStepAllocatesNothing(string spec, int threads)
    {
        // One KV head: fewer work items than threads, so with 4 threads the 20 blocks are split (split-K) and merged.
        var shape = new KvShape(2, 1, 4, 64, new Rope(64, 64, 10000f, 1f, RopeStyle.Normal));
        // KVQuant's sparse rows grow as tokens bring outliers: into arrays earlier blocks' rows let go (OutlierBytes).
        var profile = spec.StartsWith("nuq", StringComparison.Ordinal) ? KvQuantTestData.Profile(shape, tokens: 600) : null;
        var cache = new PagedKvCache(shape, KvCacheConfig.Parse(spec) with { SinkTokens = 1, Profile = profile });
        using var seq = cache.CreateSequence();
        // 610 tokens: the steps below stay inside block 19 (608..639), so no block fills, registers or seals. KVQuant:
        // 578, inside block 18 for its 3 + 24 steps (its rounds stop at 3), so no block needs its first sparse rows.
        int filled = profile != null ? 578 : 610, maxRounds = profile != null ? 3 : 4;
        // Tokens shaped like real keys and values: KVQuant's are those its profile was fitted on (~1% outliers), so
        // the steps' sparse rows grow into sizes the earlier blocks' rows went through.
        var acts = KvQuantTestData.ActivationSet(shape, 660, seed: 1);
        if (profile == null) KvMemoryEvaluator.Fill(seq, shape, filled, seed: 3);
        else
            for (int t0 = 0; t0 < filled; t0 += 64)
            {
                int n = Math.Min(64, filled - t0);
                seq.BeginChunk(new int[n]);
                int at = t0 * shape.KvDim, len = n * shape.KvDim;
                for (int l = 0; l < shape.Layers; l++) seq.Append(l, acts.Keys[l].AsSpan(at, len), acts.Values[l].AsSpan(at, len), n);
                seq.Commit(n);
            }
        using var par = new Parallelism(threads);
        var rng = new Random(5);
        var q = new float[shape.QDim];
        var o = new float[shape.QDim];
        var token = new int[1];
        for (int i = 0; i < q.Length; i++) q[i] = (float)rng.NextDouble() - 0.5f;

        void Step()
        {
            seq.BeginChunk(token);
            int row = seq.Length * shape.KvDim;
            for (int l = 0; l < shape.Layers; l++)
            {
                seq.Append(l, acts.Keys[l].AsSpan(row, shape.KvDim), acts.Values[l].AsSpan(row, shape.KvDim), 1);
                seq.Attend(l, q, 1, o, par);
            }
            seq.Commit(1);
        }

        for (int i = 0; i < 3; i++) Step();
        // Which thread runs which chunk varies (the caller takes chunks a worker has not started), so a path's one-time
        // runtime setup can land in any round on this thread. A per-step allocation shows in every round; one-time
        // costs do not: some round of 8 steps must allocate nothing.
        var rounds = new List<long>();
        for (int round = 0; round < maxRounds && (rounds.Count == 0 || rounds[^1] != 0); round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 8; i++) Step();
            rounds.Add(GC.GetAllocatedBytesForCurrentThread() - before);
        }
        Assert.True(rounds[^1] == 0, $"bytes allocated per round of 8 decode steps: {string.Join(", ", rounds)}");
        Assert.All(o, x => Assert.True(float.IsFinite(x)));
    }
}
