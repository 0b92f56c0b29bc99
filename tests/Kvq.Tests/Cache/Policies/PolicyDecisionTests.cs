using Kvq.Cache;
using Kvq.Cache.Policies;
using Kvq.Tensors;
using Kvq.Tests.Cache.Policies.Reference;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Policies;

/// <summary>
/// Which tokens a policy keeps, against the policy restated in plain double-precision code (<see cref="RefPolicy"/>):
/// random keys (a third of them repeats of earlier keys, so scores tie exactly; not under merging), values and queries go through a
/// cache under the policy in chunks of odd sizes (prefill chunks and decode steps, 3 layers, GQA group 3, head dim
/// 9, 7-token blocks, no RoPE); after every chunk each layer's kept token positions, per KV head, must equal the top-k
/// of the reference score computed from the reference's own attention over the slots held (recent windows, SnapKV's
/// observation window and pooling, per-layer budgets, sinks, ties to the most recent), and the attention statistics
/// and log-weights of the kept slots must match the reference's (merging folds evicted slots in).
/// </summary>
public class PolicyDecisionTests(ITestOutputHelper output)
{
    private const int Layers = 3, KvHeads = 2, Group = 3, HeadDim = 9, BlockTokens = 7;
    private static readonly int[] Chunks = [11, 13, 1, 1, 17, 1, 5, 3, 1, 1, 9, 1, 1];
    private static readonly KvShape Shape = new(Layers, KvHeads, KvHeads * Group, HeadDim, new Rope(HeadDim, 0, 10000f, 1f, RopeStyle.Normal));

    /// <summary>spec, budget, scope, the cache's exact-copy sinks; the reference of each spec is in <see cref="ReferenceOf"/>.</summary>
    public static TheoryData<string, string, string, int> Rows() => new()
    {
        { "streaming:sink=3", "19", "head", 0 },
        { "streaming:sink=0", "0.3", "layer", 2 },
        { "h2o", "19", "head", 0 },
        { "h2o:recent=4,sink=2", "0.45", "layer", 0 },
        { "h2o:recent=0.25", "21", "head", 1 },
        { "h2o:recent=1", "17", "head", 0 },    // 1 is a token count, not the whole budget
        { "snapkv:window=5,pool=3", "19", "head", 0 },
        { "snapkv:window=3,pool=5,sink=1", "0.4", "layer", 0 },
        { "snapkv", "15", "head", 0 },
        { "tova", "17", "head", 0 },
        { "tova:sink=2", "0.35", "layer", 0 },
        { "knorm:sink=1", "0.5", "head", 0 },
        { "knorm", "15", "layer", 0 },
        { "pyramid:h2o", "19", "head", 0 },
        { "pyramid:beta=3,snapkv:window=5,pool=3", "0.4", "head", 0 },
        { "merge:h2o", "19", "head", 0 },
        { "merge:threshold=0.3,tova", "17", "layer", 0 },
        { "merge:knorm:sink=1", "15", "head", 0 },
        { "compose:knorm+h2o", "19", "layer", 0 },
        { "compose:share=0.3,streaming:sink=2+tova", "17", "head", 0 },
    };

    private static RefPolicy ReferenceOf(string spec) => spec switch
    {
        "streaming:sink=3" => new RefStreaming(3),
        "streaming:sink=0" => new RefStreaming(0),
        "h2o" => new RefH2o(0.5, 0),
        "h2o:recent=4,sink=2" => new RefH2o(4, 2),
        "h2o:recent=0.25" => new RefH2o(0.25, 0),
        "h2o:recent=1" => new RefH2o(1, 0),
        "snapkv:window=5,pool=3" => new RefSnapKv(5, 3, 0),
        "snapkv:window=3,pool=5,sink=1" => new RefSnapKv(3, 5, 1),
        "snapkv" => new RefSnapKv(32, 7, 0),
        "tova" => new RefTova(0),
        "tova:sink=2" => new RefTova(2),
        "knorm:sink=1" => new RefKnorm(1),
        "knorm" => new RefKnorm(0),
        "pyramid:h2o" => new RefPyramid(new RefH2o(0.5, 0), 20),
        "pyramid:beta=3,snapkv:window=5,pool=3" => new RefPyramid(new RefSnapKv(5, 3, 0), 3),
        "merge:h2o" => new RefMerge(new RefH2o(0.5, 0), -1),
        "merge:threshold=0.3,tova" => new RefMerge(new RefTova(0), 0.3),
        "merge:knorm:sink=1" => new RefMerge(new RefKnorm(1), -1),
        "compose:knorm+h2o" => new RefCompose(new RefKnorm(0), new RefH2o(0.5, 0), 0.5),
        "compose:share=0.3,streaming:sink=2+tova" => new RefCompose(new RefStreaming(2), new RefTova(0), 0.3),
        _ => throw new ArgumentException($"no reference for '{spec}'", nameof(spec)),
    };

    [Theory, MemberData(nameof(Rows))]
    public void KeptSetIsTheTopKOfAnIndependentScore(string spec, string budget, string scope, int cacheSinks)
    {
        int seed = TestSeeds.Of(nameof(PolicyDecisionTests), spec, budget, scope, cacheSinks);
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var config = new KvCacheConfig("f32", "f32", BlockTokens, cacheSinks, Policy: new KvPolicyConfig(KvPolicyRegistry.Parse(spec), KvBudget.Parse(budget, scope)));
        using var seq = new PagedKvCache(Shape, config, maxTokens: 1024).CreateSequence();
        var refPolicy = ReferenceOf(spec);
        var reference = new RefCache(refPolicy, Layers, KvHeads, Group, HeadDim,
            double.Parse(budget, System.Globalization.CultureInfo.InvariantCulture), cacheSinks);
        var history = new List<float[]>[Layers];
        for (int l = 0; l < Layers; l++) history[l] = [];
        int cuts = 0, ties = 0, excused = 0;
        foreach (int n in Chunks)
        {
            seq.BeginChunk(new int[n]);
            for (int l = 0; l < Layers; l++)
            {
                var k = Keys(rng, history[l], n, repeats: !spec.StartsWith("merge"));
                var q = Random(rng, n * Shape.QDim);
                seq.Append(l, k, Random(rng, n * Shape.KvDim), n);
                seq.Attend(l, q, n, new float[n * Shape.QDim], new Parallelism(1));
                reference.AppendAndObserve(l, k, q, n);
            }
            seq.Commit(n);
            reference.Commit(n);
            for (int l = 0; l < Layers; l++)
            {
                var decision = reference.Decide(l, n, scope == "layer");
                for (int h = 0; h < KvHeads; h++)
                {
                    var head = reference.Heads[l][h];
                    var where = $"{spec}@{budget}/{scope} (seed {seed}): length {reference.Length}, layer {l} head {h}";
                    if (decision == null)
                    {
                        Assert.True(head.Positions.SequenceEqual(seq.SlotPositions(l, h).ToArray()), $"{where}: within budget, yet the cache dropped tokens");
                        continue;
                    }
                    var actual = KeptFlags(head, seq.SlotPositions(l, h), where);
                    var expect = decision.Kept[h];
                    var wrong = Enumerable.Range(0, expect.Length).Where(s => expect[s] != actual[s]).ToArray();
                    if (!wrong.All(decision.Near.Contains))
                        Assert.Fail($"{where}: kept {Describe(head, actual)}, the reference keeps {Describe(head, expect)}");
                    excused += wrong.Length;
                    ties += RefTopK.SplitTies(decision.Scores[h], expect, decision.Context.Sinks);
                    reference.Apply(l, h, actual, decision.Context);
                    cuts++;
                }
            }
            for (int l = 0; l < Layers; l++)
                for (int h = 0; h < KvHeads; h++) AssertStatistics(seq, reference.Heads[l][h], l, h, refPolicy.MergeThreshold != null, $"{spec} (seed {seed}), length {reference.Length}");
        }
        output.WriteLine($"{cuts} cuts checked, {ties} exact ties split by the boundary, {excused} slots within a float rounding of it");
        Assert.True(cuts >= Chunks.Length, $"{spec}: only {cuts} cuts (the budget hardly made the policy evict: the test would prove little)");
    }

    /// <summary>Keys for a chunk, (n, KvDim): random, but with <paramref name="repeats"/> every third token or so repeats
    /// an earlier token's keys (exact ties). Not under merging: a slot merged with a repeat of its own key differs from
    /// the other repeats by a rounding, and which of them is "most similar" is then float noise.</summary>
    private static float[] Keys(Random rng, List<float[]> history, int n, bool repeats)
    {
        var keys = new float[n * Shape.KvDim];
        for (int t = 0; t < n; t++)
        {
            var row = repeats && history.Count > 0 && rng.Next(3) == 0 ? history[rng.Next(history.Count)] : Random(rng, Shape.KvDim);
            history.Add(row);
            row.CopyTo(keys, t * Shape.KvDim);
        }
        return keys;
    }

    /// <summary>Which of the reference head's slots the cache kept (the cache holds a subset of them, by position).</summary>
    private static bool[] KeptFlags(RefHead head, ReadOnlySpan<int> cachePositions, string where)
    {
        var kept = new bool[head.Count];
        foreach (int p in cachePositions)
        {
            int s = head.Positions.IndexOf(p);
            Assert.True(s >= 0, $"{where}: the cache holds position {p}, which it had already dropped");
            kept[s] = true;
        }
        return kept;
    }

    private static string Describe(RefHead head, bool[] kept) =>
        "[" + string.Join(", ", Enumerable.Range(0, kept.Length).Where(s => kept[s]).Select(s => head.Positions[s])) + "]";

    private static void AssertStatistics(PagedKvSequence seq, RefHead head, int layer, int h, bool merges, string spec)
    {
        var att = seq.SlotAttention(layer, h);
        var logw = seq.SlotLogWeights(layer, h);
        Assert.True(merges == (logw.Length > 0), $"{spec}: {logw.Length} log-weights (a sequence keeps them only under merging)");
        for (int s = 0; s < head.Count; s++)
        {
            if (att.Length > 0)
                Assert.True(Math.Abs(att[s] - head.Attention[s]) <= 1e-4 * (1 + Math.Abs(head.Attention[s])),
                    $"{spec}: layer {layer} head {h} position {head.Positions[s]}: attention {att[s]} vs {head.Attention[s]}");
            if (logw.Length > 0)
                Assert.True(Math.Abs(logw[s] - head.LogWeights[s]) <= 1e-5,
                    $"{spec}: layer {layer} head {h} position {head.Positions[s]}: log-weight {logw[s]} vs {head.LogWeights[s]}");
        }
    }

    private static float[] Random(Random rng, int n)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }
}
