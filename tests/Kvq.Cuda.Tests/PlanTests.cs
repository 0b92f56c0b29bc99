using Kvq.Cuda.Attention;

namespace Kvq.Cuda.Tests;

public class PlanTests
{
    [Theory]
    [InlineData(1, 32, 132)]
    [InlineData(256, 32, 132)]
    [InlineData(4099, 32, 132)]
    [InlineData(131072, 32, 132)]
    [InlineData(131072, 8, 132)]
    [InlineData(1048576, 32, 114)]
    public void SplitsCoverEveryChunkAndNoneIsEmpty(long tokens, int kvHeads, int sms)
    {
        var p = SplitPlan.For(tokens, kvHeads, sms);
        long chunks = (tokens + DecodeShape.Chunk - 1) / DecodeShape.Chunk;
        Assert.True((long)p.Splits * p.ChunksPerSplit >= chunks);
        Assert.True((long)(p.Splits - 1) * p.ChunksPerSplit < chunks);
        Assert.True(p.Splits >= 1 && p.ChunksPerSplit >= 1);
    }

    [Theory]
    [InlineData(4096, 32, 132, 2)]     // LLaMA-7B at 4k: 8 splits of two chunks (256 blocks) beat 16 of one
    [InlineData(4096, 8, 132, 1)]      // GQA at 4k: two chunks per split would leave SMs idle (64 blocks)
    [InlineData(8192, 32, 132, 2)]
    [InlineData(131072, 32, 132, 16)]  // long contexts: unchanged, about 8 blocks per SM
    public void ShortContextsTakeTwoChunksPerSplitWhileEverySmKeepsABlock(long tokens, int kvHeads, int sms, int per)
    {
        var p = SplitPlan.For(tokens, kvHeads, sms, DecodeAttention.DefaultBlocksPerSm);
        Assert.Equal(per, p.ChunksPerSplit);
        Assert.True((long)p.Splits * kvHeads >= sms || p.ChunksPerSplit == 1);
        // The f16 cache keeps one chunk per split at short contexts (its kernel was slower with two, run 27).
        if (tokens <= 8192) Assert.Equal(1, SplitPlan.For(tokens, kvHeads, sms, DecodeAttention.DefaultBlocksPerSm, pairShortSplits: false).ChunksPerSplit);
    }

    [Fact]
    public void ShapesTheKernelsDoNotCoverAreRefused()
    {
        Assert.Throws<NotSupportedException>(() => new DecodeShape(8, 4, 64).Validate());
        Assert.Throws<NotSupportedException>(() => new DecodeShape(8, 2).Validate());
        new DecodeShape(8, 4).Validate();
        Assert.Equal(512, DecodeShape.Padded(257));
    }
}
