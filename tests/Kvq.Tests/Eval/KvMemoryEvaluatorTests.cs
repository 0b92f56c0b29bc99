using Kvq.Cache;
using Kvq.Eval;

namespace Kvq.Tests.Eval;

/// <summary>Memory rows are the bytes real caches hold, and agree with the block-layout arithmetic.</summary>
public class KvMemoryEvaluatorTests
{
    private static KvShape Shape => EvalFixtures.Books.Weights.Config.CreateKvShape(); // 8 layers x 2 KV heads x 64

    [Theory]
    [InlineData("f16", 1000)]
    [InlineData("q4_0", 4096)]
    [InlineData("int2", 100)]
    [InlineData("kivi2", 1000)]
    [InlineData("q8_0/f16", 333)]
    public void RowEqualsTheBytesARealSequenceHolds(string spec, int ctx)
    {
        var config = KvCacheConfig.Parse(spec);
        var row = KvMemoryEvaluator.Measure(Shape, config, ctx, weightsBytes: 123);
        // An independent cache filled the same way holds exactly these bytes.
        var cache = new PagedKvCache(Shape, config);
        using var seq = cache.CreateSequence();
        KvMemoryEvaluator.Fill(seq, Shape, ctx, seed: 1);
        var mem = seq.Memory();
        Assert.Equal(ctx, mem.Tokens);
        Assert.Equal(mem.TotalBytes, row.KvBytes);
        Assert.Equal(mem.BitsPerElement, row.BitsPerElement);
        Assert.Equal(cache.HeldBytes, row.HeldBytes);
        // Layout: whole blocks in every layer and head, plus staging for codecs that keep recent tokens in f16.
        long blocks = (ctx + 31) / 32;
        long perBlock = config.CreateKeyCodec(64).BlockBytes + config.CreateValueCodec(64).BlockBytes;
        Assert.Equal(blocks * 8 * 2 * perBlock, row.LayoutBytes);
        Assert.Equal(row.LayoutBytes, row.HeldBytes);
        Assert.Equal(row.LayoutBytes + row.StagingBytes, row.KvBytes);
        Assert.Equal(row.KvBytes - row.StagingBytes,
            row.CodesBytes + row.ScalesBytes + row.ZerosBytes + row.OutlierBytes + row.ResidualBytes);
        Assert.Equal(2L * ctx * 8 * 128 * 2, row.F16Bytes);
        Assert.Equal(123, row.WeightsBytes);
        Assert.Equal(spec.StartsWith("kivi", StringComparison.Ordinal), row.StagingBytes > 0);
    }

    [Fact]
    public void KnownFormatsHaveTheirBitsAtWholeBlocks()
    {
        Assert.Equal(16.0, KvMemoryEvaluator.Measure(Shape, KvCacheConfig.Parse("f16"), 4096).BitsPerElement);
        Assert.Equal(4.5, KvMemoryEvaluator.Measure(Shape, KvCacheConfig.Parse("q4_0"), 4096).BitsPerElement);
        Assert.Equal(8.5, KvMemoryEvaluator.Measure(Shape, KvCacheConfig.Parse("q8_0"), 4096).BitsPerElement);
        var f16 = KvMemoryEvaluator.Measure(Shape, KvCacheConfig.Parse("f16"), 4096);
        Assert.Equal(4096L * 8 * 2 * 64 * 2 * 2, f16.KvBytes); // tokens x layers x heads x dim x (K, V) x 2 bytes
    }
}
