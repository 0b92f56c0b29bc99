using Kvq.Cache;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Model;

/// <summary>
/// Sliding-window attention (mistral-swa, window 32), which llama.cpp cannot check (it has no "mistral" architecture and
/// runs Mistral GGUFs with full attention): against the relative-position property of RoPE on one layer, and the
/// paged cache's block attention against the dense reference sequence on two.
/// </summary>
public class SlidingWindowTests(ITestOutputHelper output)
{
    private static readonly Parallelism Two = new(2);

    private static float[] Logits(Transformer model, IKvSequence kv, int[] tokens, bool oneByOne)
    {
        int vocab = model.Config.VocabSize;
        var all = new float[tokens.Length * vocab];
        if (!oneByOne) model.Forward(tokens, kv, default, all);
        else
            for (int t = 0; t < tokens.Length; t++) model.Forward(tokens.AsSpan(t, 1), kv, all.AsSpan(t * vocab, vocab));
        return all;
    }

    private static int[] Text(int n) => SharedModels.MobyDickTokens.AsSpan(5000, n).ToArray().Select(t => t % 512).ToArray();

    [Fact]
    public void OneLayerWindowEqualsFullAttentionOverTheLastWindowTokens()
    {
        // One layer: the last query sees exactly the last 32 tokens, and RoPE scores depend only on position differences,
        // so its logits equal those of full attention over those 32 tokens placed at positions 0..31.
        var spec = SyntheticFixtures.Spec("mistral-swa") with { Layers = 1 };
        using var swa = GgufModelLoader.Load(SyntheticFixtures.Write(spec with { Name = "mistral-swa-1l" }));
        using var full = GgufModelLoader.Load(SyntheticFixtures.Write(spec with { Name = "mistral-full-1l", SlidingWindow = 0 }));
        Assert.Equal(32, swa.Config.WindowOf(0));
        Assert.Equal(0, full.Config.WindowOf(0));
        var tokens = Text(100);
        int vocab = swa.Config.VocabSize;
        var a = new Transformer(swa, Two, maxBatch: 16);
        var b = new Transformer(full, Two, maxBatch: 16);
        var windowed = Logits(a, new PagedKvCache(a.KvShape, KvCacheConfig.Parse("f32")).CreateSequence(), tokens, oneByOne: false);
        var tail = Logits(b, new PagedKvCache(b.KvShape, KvCacheConfig.Parse("f32")).CreateSequence(), tokens[^32..], oneByOne: false);
        var whole = Logits(b, new PagedKvCache(b.KvShape, KvCacheConfig.Parse("f32")).CreateSequence(), tokens, oneByOne: false);
        var last = LogitComparison.Compare(tail.AsSpan(31 * vocab, vocab), windowed.AsSpan(99 * vocab, vocab), 1, vocab);
        var differs = LogitComparison.Compare(whole.AsSpan(99 * vocab, vocab), windowed.AsSpan(99 * vocab, vocab), 1, vocab);
        output.WriteLine($"window vs last 32 tokens: {last}\nwindow vs full attention: {differs}");
        Assert.True(last.MaxRelativeError < 2e-4, last.ToString());
        Assert.True(differs.MaxRelativeError > 100 * Math.Max(last.MaxRelativeError, 1e-6), "the window must change the logits: " + differs);
        // Positions inside the first window see everything either way.
        var early = LogitComparison.Compare(whole.AsSpan(0, 32 * vocab), windowed.AsSpan(0, 32 * vocab), 32, vocab);
        Assert.True(early.MaxRelativeError < 1e-5, early.ToString());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void PagedBlockAttentionMatchesTheDenseReference(bool oneByOne)
    {
        // Prefill in chunks of 16 and decode one by one, over blocks of 32 stored tokens and a window of 32: windows that
        // start inside a block, blocks skipped whole.
        using var w = GgufModelLoader.Load(SyntheticFixtures.Get("mistral-swa"));
        var model = new Transformer(w, Two, maxBatch: 16);
        var tokens = Text(150);
        var dense = Logits(model, new DenseF32Sequence(model.KvShape), tokens, oneByOne: false);
        var paged = Logits(model, new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f32")).CreateSequence(), tokens, oneByOne);
        var stats = LogitComparison.Compare(dense, paged, tokens.Length, w.Config.VocabSize);
        output.WriteLine(stats.ToString());
        Assert.Equal(1.0, stats.Top1Agreement);
        Assert.True(stats.MaxRelativeError < 1e-4, stats.ToString());
    }
}
