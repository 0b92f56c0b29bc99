using Kvq.Cuda.Model;

namespace Kvq.Cuda.Tests;

/// <summary>The host side of the decode-once KVQuant prefill (no GPU): the switch that selects it and the scratch's
/// size and block table.</summary>
public class NuqPrefillTests
{
    [Theory]
    [InlineData("tiles", NuqPrefill.Tiles)]
    [InlineData(" OLD ", NuqPrefill.Tiles)]
    [InlineData("f16", NuqPrefill.F16Chunk)]
    [InlineData("New", NuqPrefill.F16Chunk)]
    [InlineData("decoded", NuqPrefill.Decoded)]
    public void ParseReadsEveryModeName(string text, NuqPrefill want) => Assert.Equal(want, NuqPrefillSwitch.Parse(text));

    [Fact]
    public void NamesReadBackAndBadValuesNameTheSwitch()
    {
        foreach (var mode in Enum.GetValues<NuqPrefill>()) Assert.Equal(mode, NuqPrefillSwitch.Parse(NuqPrefillSwitch.Name(mode)));
        var e = Assert.Throws<ArgumentException>(() => NuqPrefillSwitch.Resolve(null, "fast"));
        Assert.Contains(NuqPrefillSwitch.EnvVar, e.Message);
        Assert.Contains("'fast'", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => NuqPrefillSwitch.Name((NuqPrefill)7));
    }

    [Fact]
    public void TheOptionWinsOverTheEnvironmentAndTilesIsTheDefault()
    {
        Assert.Equal(NuqPrefill.Decoded, NuqPrefillSwitch.Resolve(null, null));
        Assert.Equal(NuqPrefill.Decoded, NuqPrefillSwitch.Resolve(null, "  "));
        Assert.Equal(NuqPrefill.F16Chunk, NuqPrefillSwitch.Resolve(null, "f16"));
        Assert.Equal(NuqPrefill.Decoded, NuqPrefillSwitch.Resolve(NuqPrefill.Decoded, "f16"));
        Assert.Equal(NuqPrefill.Tiles, NuqPrefillSwitch.Resolve(NuqPrefill.Tiles, "garbage"));   // not read when the option is set
        Assert.Null(new CudaModelOptions().NuqPrefill);
    }

    [Theory]
    [InlineData("nuq4-1%")]
    [InlineData("nuq2-1%")]
    public void TheGpuTestsSevenBLikeCacheTakesTheContiguousLayoutAndBooksThePagedOne(string spec)
    {
        // NuqPrefillGpuTests holds the decode-once path to the tiles on both KVQuant layouts: this checks, without a
        // GPU, that its two configurations land on the layouts it names.
        var seven = NuqPrefillGpuTests.SevenBLike.CreateKvShape();
        var config = new Cache.KvCacheConfig(spec, spec, 32, 1, SyntheticKvQuantProfile.Create(seven.Layers, seven.KvHeads, seven.HeadDim));
        Assert.Equal(Attention.NuqLayout.Slots, CudaKvSequence.ContiguousLayout(CudaKvSequence.Check(config, seven)!, seven, 1));
        var books = new Cache.KvShape(8, 2, 6, 64, new Tensors.Rope(64, 64, 10000f, 1f, Tensors.RopeStyle.Normal));
        var booksConfig = new Cache.KvCacheConfig(spec, spec, 32, 1, SyntheticKvQuantProfile.Create(8, 2, 64));
        Assert.Null(CudaKvSequence.ContiguousLayout(CudaKvSequence.Check(booksConfig, books)!, books, 1));
    }

    [Theory]
    [InlineData(1, 0, 1000, 128)]          // first use: one block
    [InlineData(129, 0, 1000, 256)]        // whole blocks
    [InlineData(200, 256, 1000, 256)]      // fits: unchanged
    [InlineData(257, 256, 100_000, 512)]   // grows to twice, not to the next block
    [InlineData(513, 256, 100_000, 640)]   // more than twice: what is asked, in whole blocks
    [InlineData(700, 512, 700, 768)]       // twice would pass the limit: the limit in whole blocks
    [InlineData(768, 768, 700, 768)]       // the limit rounded up to a block still fits
    public void ScratchGrowsInWholeBlocksAtLeastDoublingUpToTheLimit(long tokens, long current, long limit, long want) =>
        Assert.Equal(want, PrefillScratch.GrowTo(tokens, current, limit));

    [Fact]
    public void ScratchRefusesNoTokensAndMoreThanTheLimit()
    {
        var none = Assert.Throws<ArgumentOutOfRangeException>(() => PrefillScratch.GrowTo(0, 0, 100));
        Assert.Equal("tokens", none.ParamName);
        var over = Assert.Throws<ArgumentOutOfRangeException>(() => PrefillScratch.GrowTo(257, 0, 200));
        Assert.Contains("257", over.Message);
        Assert.Contains("200", over.Message);
    }

    [Fact]
    public void TheIdentityTableMapsEveryBlockToItselfAndTakesWholeBlocksOnly()
    {
        var rng = new Random(13);
        int blocks = rng.Next(2, 40);
        var t = PrefillScratch.IdentityTable(blocks * (long)CudaKvCache.BlockTokens);
        Assert.Equal(blocks, t.Length);
        for (int i = 0; i < t.Length; i++) Assert.Equal(i, t[i]);
        // model.cu phys(bt, j) = bt[j / 128] * 128 + j % 128 is then j for every token of the scratch.
        for (int k = 0; k < 100; k++)
        {
            int j = rng.Next(blocks * CudaKvCache.BlockTokens);
            Assert.Equal(j, t[j / CudaKvCache.BlockTokens] * CudaKvCache.BlockTokens + j % CudaKvCache.BlockTokens);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => PrefillScratch.IdentityTable(100));
        Assert.Throws<ArgumentOutOfRangeException>(() => PrefillScratch.IdentityTable(0));
    }
}
