using Kvq.Cache;
using Kvq.Cache.Attention;
using Kvq.Eval;
using Kvq.Tensors;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Attention;

/// <summary>Sequence-parallel attention on the CPU (the multi-GPU path's reference): N contiguous shards of a layer's
/// blocks, each attended alone by the one block loop, merged by <see cref="AttentionStates"/>, equal the unsharded
/// attention within 1e-5 relative; and the merge itself against a plain double-precision softmax.</summary>
public sealed class ShardedAttentionTests
{
    private static KvShape Shape(int kvHeads, int heads, int headDim) =>
        new(2, kvHeads, heads, headDim, new Rope(headDim, headDim, 10000f, 1f, RopeStyle.Normal));

    /// <summary>max |got - want| within <paramref name="tol"/> of the largest |want|.</summary>
    private static void AssertRelClose(ReadOnlySpan<float> want, ReadOnlySpan<float> got, double tol, string what)
    {
        double diff = 0, max = 0;
        for (int i = 0; i < want.Length; i++)
        {
            Assert.True(float.IsFinite(got[i]), $"{what}: output {i} is {got[i]}");
            diff = Math.Max(diff, Math.Abs(want[i] - got[i]));
            max = Math.Max(max, Math.Abs(want[i]));
        }
        Assert.True(max > 0, $"{what}: the reference output is all zeros");
        Assert.True(diff <= tol * max, $"{what}: max |diff| {diff:E3} vs max |out| {max:E3} (rel {diff / max:E2})");
    }

    [Theory]
    // spec, KV heads, query heads, head dim, tokens, query rows (1 = decode), sink tokens, shards
    [InlineData("f16", 2, 8, 64, 1003, 1, 0, 2)]
    [InlineData("f16", 2, 8, 64, 1003, 1, 0, 4)]
    [InlineData("f16", 2, 8, 64, 1003, 1, 0, 8)]
    [InlineData("f16", 1, 3, 48, 517, 7, 2, 4)]        // GQA 3, odd head dim, a 7-token chunk (causal inside), sinks
    [InlineData("q4_0", 3, 6, 64, 777, 1, 4, 8)]       // a quantized per-token codec, 4 sink tokens (in shard 0 only)
    [InlineData("kivi2", 2, 4, 64, 650, 1, 1, 4)]      // staged recent tokens (KIVI's f16 window) in the last shard
    [InlineData("int4-ch/int4", 1, 4, 32, 333, 5, 0, 2)]
    public void ShardedEqualsUnsharded(string spec, int kvHeads, int heads, int headDim, int tokens, int n, int sink, int shards)
    {
        var shape = Shape(kvHeads, heads, headDim);
        var cache = new PagedKvCache(shape, KvCacheConfig.Parse(spec) with { SinkTokens = sink });
        using var seq = cache.CreateSequence();
        int seed = TestSeeds.Of(nameof(ShardedEqualsUnsharded), spec, shards, tokens);
        KvMemoryEvaluator.Fill(seq, shape, tokens, seed);
        var rng = new Random(seed);
        var q = new float[n * shape.QDim];
        for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() * 4 - 2);
        IKvBlockReader kv = seq;
        int blocks = (tokens + kv.BlockTokens - 1) / kv.BlockTokens;
        using var par = new Parallelism(2);
        for (int layer = 0; layer < shape.Layers; layer++)
        {
            var want = new float[q.Length];
            BlockAttention.Attend(kv, layer, q, n, want, par);
            // Equal shards, then unequal ones (random cut points; some shards may be a single block or empty).
            var even = ShardedAttention.EvenBounds(blocks, shards);
            var cuts = Enumerable.Range(0, shards - 1).Select(_ => rng.Next(0, blocks + 1)).Order().ToArray();
            int[] uneven = [0, .. cuts, blocks];
            foreach (var bounds in new[] { even, uneven })
            {
                var got = new float[q.Length];
                var states = ShardedAttention.Attend(kv, layer, q, n, bounds, got, par);
                AssertRelClose(want, got, 1e-5, $"{spec} layer {layer} shards [{string.Join(", ", bounds)}]");
                // A shard with blocks saw keys for every decode row; an empty shard saw none.
                if (n == 1)
                    for (int s = 0; s < shards; s++)
                        for (int r = 0; r < states.Rows; r++)
                            Assert.Equal(bounds[s + 1] > bounds[s], states.Sum[s * states.Rows + r] > 0);
            }
        }
    }

    [Theory]
    // spec, sink tokens, shards (of 256 tokens: 8 blocks of 32), query rows (1 = decode)
    [InlineData("nuq4-1%", 0, 4, 1)]
    [InlineData("nuq4-1%", 2, 4, 6)]
    [InlineData("nuq3-1%", 1, 2, 1)]
    [InlineData("nuq2", 0, 3, 5)]
    public void KvQuantShardsOnChunkBoundariesHoldTheUnshardedBytes(string spec, int sink, int shards, int n)
    {
        // A GPU shard encodes only its own tokens, in a cache of its own. With shard boundaries on 256-token chunks (whole
        // blocks), a KVQuant shard filled alone holds, block for block, the bytes (codes and sparse outlier rows) and the
        // decoded keys and values of the unsharded cache at the same positions (pre-RoPE keys: no position in the bytes);
        // the last shard takes the tail (a partial block, staged or sealed as in the unsharded cache), the sinks live in
        // shard 0. Attention over those shards merged equals the unsharded attention within 2e-6: the CPU's unsharded pass
        // is one online softmax over all blocks (no split at 2 threads), so the shards' merge reassociates f32 sums over
        // ~1000 tokens (measured 1.0-1.2e-6 here; the GPU path runs the unsharded splits instead, bit for bit).
        const int chunk = 256;
        var shape = KvQuantTestData.Shape(2, 2, 64, groupSize: 3);
        var profile = KvQuantTestData.Profile(shape, tokens: 1500);
        int tokens = shards * chunk - 37, seed = TestSeeds.Of(nameof(KvQuantShardsOnChunkBoundariesHoldTheUnshardedBytes), spec, shards, n);
        var k = KvQuantTestData.Activations(tokens, shape.KvDim, seed);
        var v = KvQuantTestData.Activations(tokens, shape.KvDim, seed + 1);
        PagedKvSequence Fill(int first, int count, int sinkTokens)
        {
            var seq = new PagedKvCache(shape, KvCacheConfig.Parse(spec) with { Profile = profile, SinkTokens = sinkTokens }).CreateSequence();
            for (int done = 0; done < count;)
            {
                int m = Math.Min(37, count - done);
                seq.BeginChunk(new int[m]);
                int at = (first + done) * shape.KvDim;
                for (int l = 0; l < shape.Layers; l++)
                    seq.Append(l, k.AsSpan(at, m * shape.KvDim), v.AsSpan(at, m * shape.KvDim), m);
                seq.Commit(m);
                done += m;
            }
            return seq;
        }
        using var whole = Fill(0, tokens, sink);
        IKvBlockReader all = whole;
        int bt = all.BlockTokens, perShard = chunk / bt;
        Assert.Equal(0, chunk % bt);
        var tileA = new float[bt * shape.HeadDim];
        var tileB = new float[bt * shape.HeadDim];
        for (int s = 0; s < shards; s++)
        {
            int first = s * chunk, count = Math.Min(chunk, tokens - first);
            using var alone = Fill(first, count, s == 0 ? sink : 0);
            IKvBlockReader part = alone;
            for (int l = 0; l < shape.Layers; l++)
            {
                Assert.Equal(count, part.Count(l));
                for (int b = 0; b * bt < count; b++)
                {
                    int idA = all.Blocks(l)[s * perShard + b], idB = part.Blocks(l)[b], s0 = b * bt, m = Math.Min(bt, count - s0);
                    foreach (var (sideA, sideB, name) in new[] { (all.Keys, part.Keys, "keys"), (all.Values, part.Values, "values") })
                        for (int h = 0; h < shape.KvHeads; h++)
                        {
                            string what = $"{spec} shard {s} layer {l} block {b} head {h} {name}";
                            bool encodedA = sideA.IsEncodedTile(l, first + s0), encodedB = sideB.IsEncodedTile(l, s0);
                            Assert.Equal(encodedA, encodedB);
                            if (encodedA)
                                Assert.True(sideA.Block(l, idA, h).SequenceEqual(sideB.Block(l, idB, h)), $"{what}: the block's bytes differ");
                            sideA.ReadTile(l, h, first + s0, m, idA, tileA);
                            sideB.ReadTile(l, h, s0, m, idB, tileB);
                            Assert.True(tileA.AsSpan(0, m * shape.HeadDim).SequenceEqual(tileB.AsSpan(0, m * shape.HeadDim)), $"{what}: decoded tokens differ");
                        }
                }
            }
        }
        var rng = new Random(seed);
        var q = new float[n * shape.QDim];
        for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() * 4 - 2);
        var bounds = Enumerable.Range(0, shards + 1).Select(s => s * perShard).ToArray();
        using var par = new Parallelism(2);
        for (int layer = 0; layer < shape.Layers; layer++)
        {
            var want = new float[q.Length];
            var got = new float[q.Length];
            BlockAttention.Attend(all, layer, q, n, want, par);
            ShardedAttention.Attend(all, layer, q, n, bounds, got, par);
            AssertRelClose(want, got, 2e-6, $"{spec} sink {sink} layer {layer} shards [{string.Join(", ", bounds)}] x {bt} tokens");
        }
    }

    [Fact]
    public void SinkTokensLandInShardZeroOnly()
    {
        // Sinks are the first tokens: with them, shard 0's states differ from those of the same blocks without sinks,
        // every other shard's states are the same bit for bit.
        var shape = Shape(2, 4, 64);
        int tokens = 700, seed = TestSeeds.Of(nameof(SinkTokensLandInShardZeroOnly));
        var q = new float[shape.QDim];
        var rng = new Random(seed);
        for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() * 4 - 2);
        AttentionStates Run(int sink)
        {
            var cache = new PagedKvCache(shape, KvCacheConfig.Parse("q4_0") with { SinkTokens = sink });
            using var seq = cache.CreateSequence();
            KvMemoryEvaluator.Fill(seq, shape, tokens, seed);
            using var par = new Parallelism(1);
            var o = new float[q.Length];
            return ShardedAttention.Attend(seq, 0, q, 1, ShardedAttention.EvenBounds((tokens + 31) / 32, 4), o, par);
        }
        var with = Run(3);
        var without = Run(0);
        int rows = with.Rows, hd = with.HeadDim;
        Assert.NotEqual(with.Acc.AsSpan(0, rows * hd).ToArray(), without.Acc.AsSpan(0, rows * hd).ToArray());
        Assert.Equal(with.Acc.AsSpan(rows * hd).ToArray(), without.Acc.AsSpan(rows * hd).ToArray());
        Assert.Equal(with.Max.AsSpan(rows).ToArray(), without.Max.AsSpan(rows).ToArray());
    }

    [Theory]
    [InlineData(1, 5, 16)]
    [InlineData(3, 7, 33)]
    [InlineData(8, 2, 128)]
    public void CombineIsTheSoftmaxOfAllParts(int parts, int rows, int headDim)
    {
        // Each part: its own random keys' scores (spread so maxima differ by up to ~60) and values; the reference is one
        // double-precision softmax over all parts' scores. Part 0 of row 0 is empty (it saw nothing).
        var rng = new Random(TestSeeds.Of(nameof(CombineIsTheSoftmaxOfAllParts), parts, rows, headDim));
        var states = new AttentionStates(parts, rows, headDim);
        var want = new double[rows * headDim];
        for (int r = 0; r < rows; r++)
        {
            var scores = new List<double>();
            var values = new List<double[]>();
            for (int p = 0; p < parts; p++)
            {
                if (p == 0 && r == 0 && parts > 1) continue;
                int keys = rng.Next(1, 9);
                double offset = rng.NextDouble() * 60 - 30;
                var s = Enumerable.Range(0, keys).Select(_ => offset + rng.NextDouble() * 6).ToArray();
                var v = Enumerable.Range(0, keys).Select(_ => Enumerable.Range(0, headDim).Select(_ => rng.NextDouble() * 2 - 1).ToArray()).ToArray();
                double m = s.Max(), l = 0;
                var acc = new double[headDim];
                for (int j = 0; j < keys; j++)
                {
                    double e = Math.Exp(s[j] - m);
                    l += e;
                    for (int c = 0; c < headDim; c++) acc[c] += e * v[j][c];
                }
                int st = p * rows + r;
                states.Max[st] = (float)m;
                states.Sum[st] = (float)l;
                for (int c = 0; c < headDim; c++) states.Acc[st * headDim + c] = (float)acc[c];
                scores.AddRange(s);
                values.AddRange(v);
            }
            double mx = scores.Max(), total = scores.Sum(x => Math.Exp(x - mx));
            for (int j = 0; j < scores.Count; j++)
                for (int c = 0; c < headDim; c++) want[r * headDim + c] += Math.Exp(scores[j] - mx) / total * values[j][c];
        }
        var got = new float[rows * headDim];
        states.Combine(got);
        AssertRelClose(want.Select(x => (float)x).ToArray(), got, 1e-5, "combine");
    }

    [Fact]
    public void CombineRefusesARowNoPartSaw()
    {
        var states = new AttentionStates(2, 3, 8);
        states.Sum[0] = 1;
        states.Max[0] = 0;
        states.Sum[2] = 1;
        states.Max[2] = 0;
        var e = Assert.Throws<InvalidOperationException>(() => states.Combine(new float[24]));
        Assert.Contains("row 1", e.Message);
    }

    [Fact]
    public void BoundsThatMissBlocksAreRefused()
    {
        var shape = Shape(1, 2, 32);
        var cache = new PagedKvCache(shape, KvCacheConfig.Parse("f16"));
        using var seq = cache.CreateSequence();
        KvMemoryEvaluator.Fill(seq, shape, 100, 1);
        using var par = new Parallelism(1);
        var e = Assert.Throws<ArgumentException>(() => ShardedAttention.Attend(seq, 0, new float[shape.QDim], 1, [0, 2, 3], new float[shape.QDim], par));
        Assert.Contains("block 4", e.Message);
    }
}
