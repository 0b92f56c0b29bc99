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

    [Fact]
    public void ShapesTheKernelsDoNotCoverAreRefused()
    {
        Assert.Throws<NotSupportedException>(() => new DecodeShape(8, 4, 64).Validate());
        Assert.Throws<NotSupportedException>(() => new DecodeShape(8, 2).Validate());
        new DecodeShape(8, 4).Validate();
        Assert.Equal(512, DecodeShape.Padded(257));
    }
}
