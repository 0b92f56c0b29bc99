using Kvq.Cache;
using Kvq.Cache.Attention;
using Kvq.Cache.Policies;
using Kvq.Model;
using Kvq.Sampling;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache.Policies;

/// <summary>
/// Prefix sharing under a token policy (<see cref="PolicyPrefixes"/>): a prompt prefix is the policy's state after it,
/// adopted by reference; a layer's shared blocks are copied the first time the policy changes that layer. Checked
/// against lone runs of the same prompts in caches that share nothing (books-19m, prompts in chunks of 64, exact logits).
/// </summary>
public sealed class PolicyPrefixSharingTests
{
    private const int Chunk = 64, Shared = 160, Decode = 6;

    private static KvCacheConfig Config(string kv, string policy, string budget) =>
        KvCacheConfig.Parse(kv) with { Policy = new KvPolicyConfig(KvPolicyRegistry.Parse(policy), KvBudget.Parse(budget)) };

    /// <summary>BOS, <see cref="Shared"/> tokens of Moby Dick in common, then a tail of its own.</summary>
    private static int[] Prompt(int tailOffset, int tail)
    {
        var moby = SharedModels.MobyDickTokens;
        return [1, .. moby.AsSpan(12000, Shared), .. moby.AsSpan(tailOffset, tail)];
    }

    /// <summary>Logits after the prompt and after each of <see cref="Decode"/> greedy tokens; the prompt runs from the
    /// sequence's length (what an adopted prefix holds already) in the model's chunks of 64.</summary>
    private sealed class Runner(Transformer model, PagedKvSequence seq, int[] prompt)
    {
        public readonly List<float[]> Logits = new();
        private readonly List<int> _history = new(prompt);

        /// <summary>Runs the prompt up to <paramref name="end"/> tokens (one or more chunks).</summary>
        public void Prompt(int end)
        {
            var logits = new float[model.Config.VocabSize];
            model.Forward(prompt.AsSpan(seq.Length, end - seq.Length), seq, logits);
            if (end == prompt.Length) Logits.Add(logits);
        }

        public void Generate()
        {
            var sampler = new Sampler(SamplerOptions.Greedy);
            for (int i = 0; i < Decode; i++)
            {
                int next = sampler.Sample(Logits[^1], _history.ToArray());
                _history.Add(next);
                var logits = new float[model.Config.VocabSize];
                model.Forward([next], seq, logits);
                Logits.Add(logits);
            }
        }

        public List<float[]> RunAll()
        {
            Prompt(prompt.Length);
            Generate();
            return Logits;
        }
    }

    private static Transformer Model() => EngineFixtures.Model(EngineFixtures.Books, Chunk);

    private static List<float[]> Alone(Transformer model, KvCacheConfig config, int[] prompt)
    {
        using var seq = new PagedKvCache(model.KvShape, config).CreateSequence();
        return new Runner(model, seq, prompt).RunAll();
    }

    private static void AssertSameLogits(List<float[]> alone, List<float[]> shared, string what)
    {
        Assert.Equal(alone.Count, shared.Count);
        for (int i = 0; i < alone.Count; i++)
            Assert.True(alone[i].AsSpan().SequenceEqual(shared[i]), $"{what}: logits {i} differ from the lone run");
    }

    /// <summary>Every layer's blocks and their bytes (keys and values, every head).</summary>
    private static (int[][] Ids, byte[][] Bytes) Blocks(PagedKvCache cache, PagedKvSequence seq)
    {
        int layers = cache.Shape.Layers, heads = cache.Shape.KvHeads;
        var ids = new int[layers][];
        var bytes = new List<byte[]>();
        for (int l = 0; l < layers; l++)
        {
            ids[l] = ((IKvBlockReader)seq).Blocks(l).ToArray();
            foreach (int id in ids[l])
                for (int h = 0; h < heads; h++)
                {
                    bytes.Add(cache.Keys[l].Block(id, h).ToArray());
                    bytes.Add(cache.Values[l].Block(id, h).ToArray());
                }
        }
        return (ids, bytes.ToArray());
    }

    private static byte[][] BytesOf(PagedKvCache cache, int[][] ids)
    {
        var bytes = new List<byte[]>();
        for (int l = 0; l < ids.Length; l++)
            foreach (int id in ids[l])
                for (int h = 0; h < cache.Shape.KvHeads; h++)
                {
                    bytes.Add(cache.Keys[l].Block(id, h).ToArray());
                    bytes.Add(cache.Values[l].Block(id, h).ToArray());
                }
        return bytes.ToArray();
    }

    /// <summary>
    /// A first request leaves its prefix states behind; two more with the same 161-token start and tails of their own
    /// adopt the state after 128 tokens (the longest whole-chunk prefix they share), hold the same blocks (refcount 2,
    /// stored once), and run interleaved. Each produces exactly the logits it produces alone in a cache that shares
    /// nothing (prompt and 6 greedy tokens). After one sharer's policy evicted, the shared blocks' bytes are unchanged
    /// (its layers moved to copies); after all are disposed every layer's pool holds nothing, and a later prompt still
    /// finds the cached prefix.
    /// </summary>
    [Theory]
    [InlineData("f16", "h2o", "0.5")]
    [InlineData("q8_0", "merge", "96")]
    [InlineData("int8", "snapkv:window=8", "0.4")]
    [InlineData("q4_0", "pyramid:h2o", "0.6")]
    public void SharersOfAPolicyPrefixGetTheirLoneLogits(string kv, string policy, string budget)
    {
        var model = Model();
        var config = Config(kv, policy, budget);
        int[] first = Prompt(60000, 37), b = Prompt(70000, 45), c = Prompt(80000, 29);
        var aloneB = Alone(model, config, b);
        var aloneC = Alone(model, config, c);
        var aloneFirst = Alone(model, config, first);

        var cache = new PagedKvCache(model.KvShape, config);
        cache.SharePolicyPrefixes(Chunk);
        var pools = cache.LayerPools!;
        using (var writer = cache.CreateSequence(first))
        {
            Assert.Equal(0, writer.Length);
            AssertSameLogits(aloneFirst, new Runner(model, writer, first).RunAll(), "the first request (keeping its prefixes)");
        }
        Assert.All(pools, p => Assert.Equal(0, p.HeldBlockCount));

        var seqB = cache.CreateSequence(b);
        var seqC = cache.CreateSequence(c);
        Assert.Equal(128, seqB.Length);
        Assert.Equal(128, seqC.Length);
        var (ids, bytes) = Blocks(cache, seqB);
        var (idsC, _) = Blocks(cache, seqC);
        for (int l = 0; l < ids.Length; l++)
        {
            Assert.Equal(ids[l], idsC[l]);
            Assert.All(ids[l], id => Assert.Equal(2, pools[l].RefCount(id)));
            Assert.Equal(ids[l].Length, pools[l].HeldBlockCount); // stored once
        }

        var runB = new Runner(model, seqB, b);
        var runC = new Runner(model, seqC, c);
        runB.Prompt(192);  // B's policy changes every layer: its shared blocks are copied first
        var (idsB, _) = Blocks(cache, seqB);
        int copiedLayers = 0;
        for (int l = 0; l < ids.Length; l++)
        {
            // A layer the policy changed holds copies only; one it left alone (a PyramidKV layer under its budget)
            // still shares the blocks it did not write.
            var still = idsB[l].Intersect(ids[l]).ToArray();
            if (still.Length == 0) copiedLayers++;
            Assert.All(ids[l], id => Assert.Equal(still.Contains(id) ? 2 : 1, pools[l].RefCount(id)));
        }
        Assert.True(copiedLayers > 0, "no layer was changed by the policy: the test shows nothing");
        var after = BytesOf(cache, ids);
        for (int i = 0; i < bytes.Length; i++) Assert.True(bytes[i].AsSpan().SequenceEqual(after[i]), $"shared block bytes {i} changed");

        runC.Prompt(c.Length);
        runB.Prompt(b.Length);
        runC.Generate();
        runB.Generate();
        AssertSameLogits(aloneB, runB.Logits, "B");
        AssertSameLogits(aloneC, runC.Logits, "C");

        seqB.Dispose();
        seqC.Dispose();
        foreach (var p in pools)
        {
            Assert.Equal(0, p.HeldBlockCount);
            Assert.Equal(0, p.ReferenceCount);
            Assert.Equal(p.BlockCount, p.FreeBlockCount);
        }
        using var again = cache.CreateSequence(b);
        Assert.Equal(192, again.Length); // B's own prefix state after 192 tokens was kept too
        AssertSameLogits(aloneB, new Runner(model, again, b).RunAll(), "B again from its own prefix");
    }

    /// <summary>A fork under a policy shares every block; the child's next chunk copies what its policy changes, so the
    /// parent continues exactly as a lone run does, and so does the child; disposing both (one mid-way) returns every block.</summary>
    [Theory]
    [InlineData("f16", "h2o", "0.5")]
    [InlineData("q8_0", "merge:tova", "80")]
    public void AForkUnderAPolicyContinuesAsALoneRun(string kv, string policy, string budget)
    {
        var model = Model();
        var config = Config(kv, policy, budget);
        var prompt = Prompt(60000, 37);
        int[] next = [.. SharedModels.MobyDickTokens.AsSpan(90000, 40)];
        int vocab = model.Config.VocabSize;
        var alone = new float[vocab];
        using (var seq = new PagedKvCache(model.KvShape, config).CreateSequence())
        {
            model.Forward(prompt, seq, new float[vocab]);
            model.Forward(next, seq, alone);
        }

        var cache = new PagedKvCache(model.KvShape, config);
        var parent = cache.CreateSequence();
        model.Forward(prompt, parent, new float[vocab]);
        var (ids, bytes) = Blocks(cache, parent);
        var child = parent.Fork();
        Assert.Equal(parent.Length, child.Length);
        for (int l = 0; l < ids.Length; l++) Assert.All(ids[l], id => Assert.Equal(2, cache.LayerPools![l].RefCount(id)));
        var fromChild = new float[vocab];
        model.Forward(next, child, fromChild);
        var after = BytesOf(cache, ids);
        for (int i = 0; i < bytes.Length; i++) Assert.True(bytes[i].AsSpan().SequenceEqual(after[i]), $"parent block bytes {i} changed");
        var fromParent = new float[vocab];
        model.Forward(next, parent, fromParent);
        Assert.True(alone.AsSpan().SequenceEqual(fromChild), "child vs lone run");
        Assert.True(alone.AsSpan().SequenceEqual(fromParent), "parent vs lone run");

        var grandchild = child.Fork();
        child.BeginChunk([5, 6]); // a chunk begun (blocks reserved) and never committed: a cancel mid-step
        child.Dispose();
        parent.Dispose();
        grandchild.Dispose();
        Assert.All(cache.LayerPools!, p => Assert.Equal(0, p.ReferenceCount));
        Assert.All(cache.LayerPools!, p => Assert.Equal(p.BlockCount, p.FreeBlockCount));
    }

    /// <summary>Memory pressure reuses the cached blocks of kept prefix states (every free block handed out once): the
    /// states are found stale and dropped, and the prompt starts from nothing yet gives its lone logits. Sink tokens
    /// (exact copies kept per sequence) are refused.</summary>
    [Fact]
    public void EvictedPrefixStatesAreDroppedAndSinkTokensRefused()
    {
        var model = Model();
        var config = Config("f16", "h2o", "0.5");
        var b = Prompt(70000, 45);
        var aloneB = Alone(model, config, b);
        var cache = new PagedKvCache(model.KvShape, config, maxTokens: 16 * 32);
        var prefixes = cache.SharePolicyPrefixes(Chunk);
        using (var s = cache.CreateSequence(b)) new Runner(model, s, b).RunAll();
        Assert.Equal(3, prefixes.Count); // after 64, 128 and 192 tokens
        foreach (var pool in cache.LayerPools!)
        {
            Assert.True(pool.CachedFreeBlockCount > 0);
            var taken = Enumerable.Range(0, pool.FreeBlockCount).Select(_ => pool.Allocate()).ToArray();
            foreach (int id in taken) pool.Release(id);
            Assert.Equal(0, pool.CachedFreeBlockCount);
        }
        using (var s = cache.CreateSequence(b))
        {
            Assert.Equal(0, s.Length);
            AssertSameLogits(aloneB, new Runner(model, s, b).RunAll(), "B after its prefix states were evicted");
        }
        Assert.Equal(3, prefixes.Stale);

        var sinks = new PagedKvCache(model.KvShape, config with { SinkTokens = 4 });
        Assert.Contains("sink", Assert.Throws<KvSpecException>(() => sinks.SharePolicyPrefixes(Chunk)).Message);
    }
}
