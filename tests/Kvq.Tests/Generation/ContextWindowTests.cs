using Kvq.Cache;
using Kvq.Generation;
using Kvq.Sampling;
using Kvq.Tests.Eval;

namespace Kvq.Tests.Generation;

/// <summary>The context shift: which tokens a full window keeps, and a fixed window stopping at ContextFull.</summary>
public sealed class ContextWindowTests
{
    [Fact]
    public void ShiftKeepsTheFirstTokensAndTheRecentHalf()
    {
        var model = EvalFixtures.StoriesTransformer();
        using var w = ContextWindow.Shifting(model, KvCacheConfig.Parse("f32"), size: 20, keep: 4);
        var first = w.Sequence;
        var history = Enumerable.Range(100, 20).ToList();
        var kept = w.Shift(history);
        Assert.Equal([100, 101, 102, 103, .. Enumerable.Range(112, 8)], kept);
        Assert.NotSame(first, w.Sequence);
        Assert.Equal(0, w.Sequence.Length);
        Assert.Equal(1, w.Shifts);
    }

    [Fact]
    public void FixedWindowStopsWhenFull()
    {
        var model = EvalFixtures.StoriesTransformer();
        var gen = new Generator(model, EvalFixtures.Stories.Tokenizer);
        var prompt = gen.EncodePrompt("Once upon a time", new GenerationOptions());
        using var w = ContextWindow.Over(new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f32")).CreateSequence(), size: prompt.Length + 3);
        var r = gen.Generate(prompt, new GenerationOptions { MaxTokens = 50, Sampler = SamplerOptions.Greedy }, w);
        Assert.Equal(StopReason.ContextFull, r.StopReason);
        Assert.Equal(prompt.Length + 3, w.Sequence.Length);
        Assert.Throws<ArgumentException>(() => gen.Generate(prompt, new GenerationOptions(), ContextWindow.Over(w.Sequence, size: 2)));
    }
}
