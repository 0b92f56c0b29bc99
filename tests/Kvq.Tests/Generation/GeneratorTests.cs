using Kvq.Cache;
using Kvq.Generation;
using Kvq.Model;
using Kvq.Sampling;
using Kvq.Tensors;

namespace Kvq.Tests.Generation;

public class GeneratorTests
{
    private const string Expected = ", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.";

    /// <summary>The MANIFEST's greedy continuation of stories260K, from the GGUF and from the llama2.c checkpoint.</summary>
    [Theory]
    [InlineData("stories260K.gguf")]
    [InlineData("stories260K.bin")]
    public void GreedyStoriesContinuationMatchesManifest(string file)
    {
        using var loaded = ModelLoader.Load(Fixtures.Model(file));
        var model = new Transformer(loaded.Weights, new Parallelism(2));
        var gen = new Generator(model, loaded.Tokenizer);
        var streamed = "";
        var result = gen.Generate("Once upon a time", new GenerationOptions { MaxTokens = 90, Sampler = SamplerOptions.Greedy },
            new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f32")).CreateSequence(), s => streamed += s);
        Assert.StartsWith(Expected, result.Text);
        Assert.Equal(result.Text, streamed);
        Assert.Equal(90, result.GeneratedTokens);
    }

    [Fact]
    public void StopStringEndsGeneration()
    {
        using var loaded = ModelLoader.Load(Fixtures.StoriesGguf);
        var model = new Transformer(loaded.Weights, new Parallelism(2));
        var result = new Generator(model, loaded.Tokenizer).Generate("Once upon a time",
            new GenerationOptions { MaxTokens = 100, Sampler = SamplerOptions.Greedy, StopStrings = ["Lily"] },
            new DenseF32Sequence(model.KvShape));
        Assert.Equal(StopReason.StopString, result.StopReason);
        Assert.Equal(", there was a little girl named ", result.Text);
    }
}
