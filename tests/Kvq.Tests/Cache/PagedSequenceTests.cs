using Kvq.Cache;
using Kvq.Tensors;

namespace Kvq.Tests.Cache;

public class PagedSequenceTests
{
    /// <summary>The paged f32 cache (odd block sizes, online softmax over blocks) equals the dense reference.</summary>
    [Theory]
    [InlineData(1, 7)]
    [InlineData(5, 32)]
    [InlineData(64, 16)]
    public void PagedF32EqualsDense(int batch, int blockTokens)
    {
        var model = new Kvq.Model.Transformer(SharedModels.Books, new Parallelism(2), maxBatch: batch);
        var tokens = SharedModels.MobyDickTokens.AsSpan(1000, 150).ToArray();
        int vocab = model.Config.VocabSize;
        var expected = new float[tokens.Length * vocab];
        var actual = new float[tokens.Length * vocab];
        model.Forward(tokens, new DenseF32Sequence(model.KvShape), default, expected);
        var seq = new PagedKvCache(model.KvShape, new KvCacheConfig("f32", "f32", blockTokens)).CreateSequence();
        model.Forward(tokens, seq, default, actual);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-3f * (1 + Math.Abs(expected[i])), $"logit {i}: {expected[i]} vs {actual[i]}");
        Assert.Equal(tokens.Length, seq.Length);
    }
}
