using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Policies;
using Kvq.Model;
using Kvq.Tests.Cache.Codecs.KvQuant;
using Kvq.Tests.Eval;

namespace Kvq.Tests.Cache.Policies;

/// <summary>
/// Every policy x every codec on a small real model (stories260K; books-19m for the formats that need head dims of 32
/// and for low-rank keys),
/// fed as a prompt chunk, three small chunks and decode steps, with two exact-copy sinks. After every chunk: each layer
/// holds exactly min(tokens seen, its budget) slots, sinks are kept in every head, positions increase, the layer pools
/// hold exactly the blocks the slots need and the sequence's bytes equal the pools', merged slots still count every
/// token once, logits are finite; after disposal every block is back in the pools. Whole-block formats are refused with
/// a typed error naming the format.
/// </summary>
public class PolicyMatrixTests
{
    private static readonly (string Spec, string Scope)[] PolicyRows =
    [
        ("streaming", "head"), ("h2o", "head"), ("h2o:recent=3", "layer"), ("snapkv:window=8,pool=5", "head"), ("tova", "layer"),
        ("knorm", "head"), ("pyramid:h2o", "head"), ("merge:h2o", "head"), ("merge:streaming:sink=1", "layer"), ("compose:knorm+h2o", "head"),
    ];

    private static readonly Lazy<IKvProfile> StoriesProfile = new(() => KvQuantTestData.Profile(EvalFixtures.StoriesTransformer().KvShape, tokens: 600));

    /// <summary>KVQuant calibration and low-rank bases for books-19m's shape, fitted on synthetic activations.</summary>
    private static readonly Lazy<IKvProfile> BooksProfile = new(() =>
    {
        var shape = EvalFixtures.BooksTransformer().KvShape;
        var acts = KvQuantTestData.ActivationSet(shape, 600, 1);
        var cals = Kvq.Calibration.KvQuant.KvQuantFitter.Fit(acts, new Kvq.Calibration.KvQuant.KvQuantFitOptions([0.01], Seed: 7, Threads: 1, Bins: 1024, Restarts: 1));
        var settings = new Kvq.Cache.Codecs.KvQuant.KvQuantCalibrationSettings("synthetic", new string('0', 64), 1, 600, 1, 7, false);
        return new Kvq.Cache.Codecs.KvQuant.KvQuantProfile("test-model", settings, shape.Layers, shape.KvHeads, shape.HeadDim, cals,
            Kvq.Calibration.LowRank.LowRankFitter.Fit(acts));
    });

    public static IEnumerable<object[]> Codecs()
    {
        foreach (var (name, _) in KvCodecRegistry.Formats) yield return [name];
    }

    [Theory, MemberData(nameof(Codecs))]
    public void EveryPolicyKeepsItsInvariants(string codec)
    {
        // ggml blocks need head dims of 32 and low-rank latents a head dim above the rank: books-19m (64) for those.
        bool lowRank = Kvq.Cache.Codecs.LowRank.LowRankSpec.TryParse(codec) != null;
        string inner = codec.EndsWith(":rot", StringComparison.Ordinal) ? codec[..^4] : codec;
        bool small = !(inner is "q8_0" or "q4_0") && !lowRank;
        var model = small ? EvalFixtures.StoriesTransformer() : EvalFixtures.BooksTransformer();
        var tokens = small ? EvalFixtures.StoriesTokens : EvalFixtures.MobyDickHeadTokens;
        var profile = lowRank ? BooksProfile.Value : codec.StartsWith("nuq") ? StoriesProfile.Value : null;
        foreach (var (spec, scope) in PolicyRows)
        {
            var policy = KvPolicyRegistry.Parse(spec);
            var budget = KvBudget.Parse("0.3", scope);
            var config = new KvCacheConfig(codec, codec, BlockTokens: 8, SinkTokens: 2, Profile: profile, Policy: new KvPolicyConfig(policy, budget));
            var probe = KvCodecRegistry.Create(codec, new KvCodecContext(KvSide.Value, 32, model.Config.HeadDim, 0, 0, profile));
            if (probe.EncodesWholeBlocks)
            {
                var e = Assert.Throws<KvSpecException>(() => new PagedKvCache(model.KvShape, config with { BlockTokens = 32 }));
                Assert.Contains($"policy '{spec}'", e.Message);
                Assert.Contains($"'{codec}'", e.Message);
                continue;
            }
            Run(model, tokens, config, $"{codec} x {spec} ({scope})");
        }
    }

    private static void Run(Transformer model, int[] text, KvCacheConfig config, string what)
    {
        var cache = new PagedKvCache(model.KvShape, config, maxTokens: 4096);
        var policy = config.Policy!.Policy;
        int layers = model.Config.Layers, heads = model.Config.KvHeads, bt = config.BlockTokens, vocab = model.Config.VocabSize;
        int sinks = Math.Max(config.SinkTokens, policy.SinkTokens);
        var logits = new float[vocab];
        var seq = cache.CreateSequence();
        int[] chunks = [40, 7, 7, 7, 1, 1, 1, 1, 1, 1, 1, 1];
        int done = 0;
        var previous = new int[layers];
        foreach (int n in chunks)
        {
            model.Forward(text.AsSpan(100 + done, n), seq, logits);
            done += n;
            Assert.True(logits.All(float.IsFinite), $"{what}: logits not finite after {done} tokens");
            int average = config.Policy.Budget.Tokens(done);
            for (int l = 0; l < layers; l++)
            {
                // The chunk's tokens join the kept ones; over the budget, the policy cuts back to it exactly.
                int keep = Math.Max(policy.LayerBudget(l, layers, average), sinks + 1);
                int expect = Math.Min(previous[l] + n, keep);
                Assert.True(seq.SlotCount(l) == expect, $"{what}: layer {l} holds {seq.SlotCount(l)} slots after {done} tokens, expected {expect} (budget {keep})");
                previous[l] = expect;
                Assert.Equal((seq.SlotCount(l) + bt - 1) / bt, cache.LayerPools![l].HeldBlockCount);
                for (int h = 0; h < heads; h++)
                {
                    var pos = seq.SlotPositions(l, h);
                    for (int s = 0; s < Math.Min(sinks, done); s++) Assert.True(pos[s] == s, $"{what}: layer {l} head {h} lost sink {s}");
                    for (int s = 1; s < pos.Length; s++) Assert.True(pos[s] > pos[s - 1] && pos[s] < done, $"{what}: layer {l} head {h} positions out of order");
                    if (policy.Merges)
                    {
                        double mass = 0;
                        foreach (var w in seq.SlotLogWeights(l, h)) mass += Math.Exp(w);
                        Assert.True(Math.Abs(mass - done) < 1e-3 * done, $"{what}: layer {l} head {h}: merged slots stand for {mass} tokens, not {done}");
                    }
                }
            }
            var mem = seq.Memory();
            Assert.Equal(cache.HeldBytes, mem.Keys.Total + mem.Values.Total);
            Assert.Equal(done, mem.Tokens);
        }
        seq.Dispose();
        foreach (var pool in cache.LayerPools!) Assert.Equal(pool.BlockCount, pool.FreeBlockCount);
        Assert.Equal(0, cache.HeldBytes);
    }
}
