using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Policies;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Cache.Policies;

/// <summary>
/// A cache under a policy against a plain reference: random keys, values and queries go through
/// <see cref="IKvSequence"/> in chunks of odd sizes (prefill chunks and decode steps, GQA group 3, 7-token blocks);
/// after every chunk the output of attention must equal softmax attention over exactly the tokens the cache reports
/// it kept (original f32 keys rotated at their positions, plus the slots' log-weights), and the attention statistics
/// a policy reads must equal probabilities computed densely (accumulated over chunks by position for H2O).
/// </summary>
public class PolicyReferenceTests(ITestOutputHelper log)
{
    private const int Layers = 2, KvHeads = 2, Group = 3, HeadDim = 16, BlockTokens = 7, SinkTokens = 1;
    private static readonly int[] Chunks = [9, 13, 1, 1, 17, 1, 5, 2, 1];
    private static readonly KvShape Shape = new(Layers, KvHeads, KvHeads * Group, HeadDim, new Rope(HeadDim, HeadDim, 10000f, 1f, RopeStyle.Normal));

    private static readonly Lazy<IKvProfile> Profile = new(() => Codecs.KvQuant.KvQuantTestData.Profile(Shape, tokens: 600));

    /// <summary>Each spec with f32 (exact), int4 (lossy, post-RoPE) and nuq3-1% (lossy, pre-RoPE: rotated at each
    /// slot's position inside attention).</summary>
    public static IEnumerable<object[]> Specs()
    {
        foreach (var row in SpecRows())
            foreach (var codec in new[] { "f32", "int4", "nuq3-1%" })
                yield return [.. row, codec];
    }

    private static IEnumerable<object[]> SpecRows() =>
    [
        ["streaming:sink=3", "20", "head"], ["h2o", "20", "head"], ["h2o:recent=4", "0.4", "layer"], ["snapkv:window=5,pool=3", "20", "head"],
        ["tova", "18", "head"], ["knorm:sink=1", "0.5", "head"], ["pyramid:h2o", "20", "head"], ["compose:knorm+h2o", "19", "layer"],
    ];

    [Theory, MemberData(nameof(Specs))]
    public void AttentionAndStatisticsMatchPlainReference(string spec, string budget, string scope, string codec)
    {
        var policy = KvPolicyRegistry.Parse(spec);
        var config = new KvCacheConfig(codec, codec, BlockTokens, SinkTokens, codec.StartsWith("nuq") ? Profile.Value : null,
            new KvPolicyConfig(policy, KvBudget.Parse(budget, scope)));
        var cache = new PagedKvCache(Shape, config, maxTokens: 4096);
        using var seq = cache.CreateSequence();
        int seed = TestSeeds.Of(nameof(AttentionAndStatisticsMatchPlainReference), spec, budget, scope, codec);
        log.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        var keys = new List<float[]>[Layers];     // per layer: (KvDim) key of each position as attention must see it
        var values = new List<float[]>[Layers];   // (post-RoPE, through the codec: what a full cache would hold)
        for (int l = 0; l < Layers; l++) { keys[l] = []; values[l] = []; }
        bool evicted = false;
        foreach (int n in Chunks)
        {
            seq.BeginChunk(new int[n]);
            for (int l = 0; l < Layers; l++)
            {
                var before = AttentionByPosition(seq, l);
                var k = Random(rng, n * Shape.KvDim);
                var v = Random(rng, n * Shape.KvDim);
                var q = Random(rng, n * Shape.QDim);
                for (int t = 0; t < n; t++)
                {
                    keys[l].Add(Stored(config, KvSide.Key, l, k.AsSpan(t * Shape.KvDim, Shape.KvDim), seq.Length + t));
                    values[l].Add(Stored(config, KvSide.Value, l, v.AsSpan(t * Shape.KvDim, Shape.KvDim), seq.Length + t));
                    Shape.Rope.RotateHeads(q.AsSpan(t * Shape.QDim, Shape.QDim), Shape.Heads, seq.Length + t);
                }
                seq.Append(l, k, v, n);
                var output = new float[n * Shape.QDim];
                seq.Attend(l, q, n, output, new Parallelism(2));
                for (int h = 0; h < KvHeads; h++)
                {
                    var (expect, probs) = Reference(seq, l, h, q, n, keys[l], values[l], policy.ObservedQueries);
                    for (int t = 0; t < n; t++)
                        for (int j = 0; j < Group; j++)
                            for (int d = 0; d < HeadDim; d++)
                            {
                                int i = t * Shape.QDim + (h * Group + j) * HeadDim + d;
                                Assert.True(Math.Abs(expect[i] - output[i]) < 2e-4, $"{spec} {codec} (seed {seed}): layer {l} head {h} token {t} dim {d}: {output[i]} vs {expect[i]}");
                            }
                    if (policy.ObservedQueries == 0) continue;
                    var stats = seq.SlotAttention(l, h);
                    var pos = seq.SlotPositions(l, h);
                    for (int s = 0; s < stats.Length; s++)
                    {
                        double want = probs[s] + (policy.AccumulatesAttention && before[h].TryGetValue(pos[s], out var old) ? old : 0);
                        Assert.True(Math.Abs(stats[s] - want) < 1e-4, $"{spec} {codec} (seed {seed}): layer {l} head {h} slot {s} (position {pos[s]}): attention {stats[s]} vs {want}");
                    }
                }
            }
            seq.Commit(n);
            for (int l = 0; l < Layers; l++) evicted |= seq.SlotCount(l) < seq.Length;
        }
        Assert.True(evicted, $"{spec}: the budget never made the policy evict (the test would prove nothing)");
    }

    [Theory]
    [InlineData("merge:streaming:sink=1", "head")]
    [InlineData("merge:h2o", "layer")]
    public void MergedIdenticalTokensDrawTheirOwnAttention(string spec, string scope)
    {
        // Without RoPE, repeats of the same (key, value) are identical, so a slot standing for w of them must draw
        // exactly their attention (score + ln w): the merging cache and a full one give the same output at every step.
        var shape = Shape with { Rope = new Rope(HeadDim, 0, 10000f, 1f, RopeStyle.Normal) };
        var merged = new PagedKvCache(shape, new KvCacheConfig("f32", "f32", BlockTokens,
            Policy: new KvPolicyConfig(KvPolicyRegistry.Parse(spec), KvBudget.Parse("9", scope))), maxTokens: 1024);
        var full = new PagedKvCache(shape, new KvCacheConfig("f32", "f32", BlockTokens), maxTokens: 1024);
        using var a = merged.CreateSequence();
        using var b = full.CreateSequence();
        var rng = new Random(5);
        const int Kinds = 4, Tokens = 40;
        var k = Random(rng, Kinds * shape.KvDim);
        var v = Random(rng, Kinds * shape.KvDim);
        for (int t = 0; t < Tokens; t++)
        {
            int c = t % Kinds; // every kind stays among the recent tokens, so each evicted token has an identical kept one
            var kt = k.AsSpan(c * shape.KvDim, shape.KvDim).ToArray();
            var vt = v.AsSpan(c * shape.KvDim, shape.KvDim).ToArray();
            var q = Random(rng, shape.QDim);
            foreach (var s in new[] { a, b }) s.BeginChunk([0]);
            for (int l = 0; l < Layers; l++)
            {
                var oa = new float[shape.QDim];
                var ob = new float[shape.QDim];
                a.Append(l, kt, vt, 1);
                b.Append(l, kt, vt, 1);
                a.Attend(l, q, 1, oa, new Parallelism(1));
                b.Attend(l, q, 1, ob, new Parallelism(1));
                for (int i = 0; i < oa.Length; i++) Assert.True(Math.Abs(oa[i] - ob[i]) < 1e-4, $"{spec}: token {t} layer {l} [{i}]: {oa[i]} vs {ob[i]}");
            }
            a.Commit(1);
            b.Commit(1);
        }
        for (int l = 0; l < Layers; l++)
            for (int h = 0; h < KvHeads; h++)
            {
                Assert.Equal(9, a.SlotCount(l));
                double mass = 0;
                foreach (var w in a.SlotLogWeights(l, h)) mass += Math.Exp(w);
                Assert.Equal(Tokens, mass, 3); // every token is still counted once
            }
    }

    /// <summary>What attention must read for a token at <paramref name="position"/> (every head of a (KvDim) row): the
    /// codec's round trip of the key (pre-RoPE codecs: rotated after decoding; others: rotated before encoding) or
    /// of the value, or for the cache's sinks their exact f16 copies. Per-token codecs encode each token alone, so a
    /// one-token block gives what the cache stores.</summary>
    private static float[] Stored(KvCacheConfig config, KvSide side, int layer, ReadOnlySpan<float> x, int position)
    {
        var row = x.ToArray();
        var rope = Shape.Rope;
        for (int h = 0; h < KvHeads; h++)
        {
            var head = row.AsSpan(h * HeadDim, HeadDim);
            var codec = config.CreateCodec(side, layer, h, HeadDim);
            if (codec.HasBlockOutliers) codec = new Codecs.BlockOutliersTestCodec(codec);
            bool rotateFirst = side == KvSide.Key && !codec.PreRope;
            if (rotateFirst) rope.RotateAt(head, 1, [position]);
            if (position < SinkTokens)
                for (int d = 0; d < HeadDim; d++) head[d] = (float)(Half)head[d];
            else
            {
                var block = new byte[codec.BlockBytes];
                codec.EncodeToken(head, block, 0);
                codec.DecodeBlock(block, 1, head);
            }
            if (side == KvSide.Key && codec.PreRope) rope.RotateAt(head, 1, [position]);
        }
        return row;
    }

    /// <summary>Reported attention of each slot of a layer by position, per head (before the chunk is appended).</summary>
    private static Dictionary<int, double>[] AttentionByPosition(PagedKvSequence seq, int layer)
    {
        var all = new Dictionary<int, double>[KvHeads];
        for (int h = 0; h < KvHeads; h++)
        {
            all[h] = [];
            var att = seq.SlotAttention(layer, h);
            var pos = seq.SlotPositions(layer, h);
            for (int s = 0; s < att.Length; s++) all[h][pos[s]] = att[s];
        }
        return all;
    }

    /// <summary>Plain attention over the slots the cache holds for (layer, head); also each slot's probability summed
    /// over the group's query heads and the last <paramref name="observed"/> queries.</summary>
    private static (float[] Output, double[] Probs) Reference(PagedKvSequence seq, int layer, int head, float[] q, int n,
        List<float[]> keys, List<float[]> values, int observed)
    {
        var pos = seq.SlotPositions(layer, head).ToArray();
        var logw = seq.SlotLogWeights(layer, head).ToArray();
        int count = pos.Length;
        var rotated = new float[count * HeadDim];
        for (int s = 0; s < count; s++) keys[pos[s]].AsSpan(head * HeadDim, HeadDim).CopyTo(rotated.AsSpan(s * HeadDim));
        var vals = new float[count * HeadDim];
        for (int s = 0; s < count; s++) values[pos[s]].AsSpan(head * HeadDim, HeadDim).CopyTo(vals.AsSpan(s * HeadDim));
        var output = new float[n * Shape.QDim];
        var probs = new double[count];
        for (int t = 0; t < n; t++)
            for (int j = 0; j < Group; j++)
            {
                var qh = q.AsSpan(t * Shape.QDim + (head * Group + j) * HeadDim, HeadDim);
                int visible = count - n + t + 1;
                var sc = new double[visible];
                double mx = double.NegativeInfinity;
                for (int s = 0; s < visible; s++)
                {
                    double dot = 0;
                    for (int d = 0; d < HeadDim; d++) dot += qh[d] * rotated[s * HeadDim + d];
                    sc[s] = dot * Shape.ScoreScale + (logw.Length > 0 ? logw[s] : 0);
                    mx = Math.Max(mx, sc[s]);
                }
                double sum = 0;
                for (int s = 0; s < visible; s++) sum += sc[s] = Math.Exp(sc[s] - mx);
                for (int s = 0; s < visible; s++)
                {
                    double p = sc[s] / sum;
                    if (t >= n - observed) probs[s] += p;
                    var v = vals.AsSpan(s * HeadDim, HeadDim);
                    for (int d = 0; d < HeadDim; d++) output[t * Shape.QDim + (head * Group + j) * HeadDim + d] += (float)(p * v[d]);
                }
            }
        return (output, probs);
    }

    private static float[] Random(Random rng, int n)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }
}
