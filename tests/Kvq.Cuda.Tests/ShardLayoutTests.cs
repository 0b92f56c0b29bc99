using Kvq.Cuda.Distributed;

namespace Kvq.Cuda.Tests;

/// <summary>The arithmetic of sequence-parallel shards (host only).</summary>
public class ShardLayoutTests
{
    [Fact]
    public void EvenShardsCoverTheTokensInWholeBlocks()
    {
        var l = ShardLayout.Even(1000, 3);   // 8 blocks over 3 shards: 2, 3, 3
        Assert.Equal([256, 384, 384], l.Capacity);
        Assert.Equal([0L, 256, 640], l.First);
        Assert.Equal(1024, l.Total);
        Assert.Equal([128, 128, 128, 128], ShardLayout.Even(5, 4).Capacity);   // at least one block per shard
        Assert.Equal(0, l.Owner(0));
        Assert.Equal(0, l.Owner(255));
        Assert.Equal(1, l.Owner(256));
        Assert.Equal(2, l.Owner(1023));
        Assert.Throws<ArgumentOutOfRangeException>(() => l.Owner(1024));
        Assert.Equal(0, l.Held(2, 600));
        Assert.Equal(344, l.Held(1, 600));
        Assert.Equal(256, l.Held(0, 600));
    }

    [Fact]
    public void EvenShardsAlignToTheGivenUnit()
    {
        // Units of 256 tokens (two blocks): boundaries on multiples of 256 whatever the token count.
        var l = ShardLayout.Even(1000, 3, align: 256);   // 4 units over 3 shards: 1, 1, 2
        Assert.Equal([256, 256, 512], l.Capacity);
        Assert.All(l.First, f => Assert.Equal(0, f % 256));
        Assert.Equal([256, 256, 256, 256, 256, 256, 256, 256], ShardLayout.Even(1001, 8, align: 256).Capacity);   // one unit per shard at least
        Assert.Equal(ShardLayout.Even(1000, 3).Capacity, ShardLayout.Even(1000, 3, align: 128).Capacity);
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardLayout.Even(1000, 3, align: 200));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardLayout.Even(1000, 3, align: 64));
    }

    [Fact]
    public void AChunkIsCutWhereItCrossesShards()
    {
        var l = new ShardLayout([128, 256, 128]);
        Assert.Equal([(0, 0, 8), (1, 8, 40)], l.RowGroups(120, 40).ToArray());
        Assert.Equal([(0, 0, 28), (1, 28, 284), (2, 284, 300)], l.RowGroups(100, 300).ToArray());
        Assert.Equal([(2, 0, 1)], l.RowGroups(511, 1).ToArray());
    }

    [Fact]
    public void ShardsOfPartialBlocksAreRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => new ShardLayout([128, 200]));
        Assert.Contains("shard 1 holds 200", e.Message);
        Assert.Throws<ArgumentException>(() => new ShardLayout([]));
    }

    [Fact]
    public void AMalformedUniqueIdIsRefusedBeforeNcclIsCalled()
    {
        var e = Assert.Throws<ArgumentException>(() => NcclCommunicator.Create(null!, 0, 1, "abc"));
        Assert.Contains("256 hex digits", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => NcclCommunicator.Create(null!, 2, 2, new string('0', 256)));
    }
}
