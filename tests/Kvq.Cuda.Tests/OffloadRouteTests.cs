using Kvq.Cache;
using Kvq.Cache.Offload;
using Kvq.Cache.Policies;
using Kvq.Cuda.Offload;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Cuda.Tests;

/// <summary>What the CLI's route to the device's host tier decides on the host (no GPU): which configs the tier takes
/// (Offload/OffloadFormat, typed refusals), how its tiers are sized (OffloadSizes.For) and which blocks move to the host
/// after a decode step (Offload/HostSpill).</summary>
public class OffloadRouteTests
{
    // books-19m's shape (8 layers, 8 query heads over 2 KV heads, head dim 64), built here without the file.
    private static readonly ModelConfig Books = new()
    {
        Architecture = "llama", Dim = 512, Layers = 8, Heads = 8, KvHeads = 2, HeadDim = 64, FfnDim = 1024, VocabSize = 300,
        NormEps = 1e-5f, RopeBase = 10000f, RopeDims = 64, RopeStyle = RopeStyle.Normal, ContextLength = 4096,
    };

    private static KvCacheConfig Nuq(string spec, string budget, int sink = 1) =>
        new(spec, spec, 32, sink, SyntheticKvQuantProfile.Create(Books.Layers, Books.KvHeads, Books.HeadDim), Offload: KvOffloadBudget.Parse(budget));

    [Theory]
    [InlineData("nuq2")]
    [InlineData("nuq3-1%")]
    [InlineData("nuq3-1%:mixed")]
    public void KvQuantFormatsGiveTheirCodecsPerLayer(string spec)
    {
        var codecs = OffloadFormat.Codecs(Nuq(spec, "2%"), Books.CreateKvShape());
        Assert.Equal(Books.Layers, codecs.Length);
        Assert.All(codecs, l => Assert.Equal(Books.KvHeads, l.Keys.Length));
        Assert.All(codecs, l => Assert.Equal(Books.KvHeads, l.Values.Length));
    }

    [Theory]
    [InlineData("f16", "2%", 0, "f16 is not offloaded on the device")]
    [InlineData("q4_0", "2%", 0, "is not available on the CUDA device")]
    [InlineData("nuq3", "25%:box=4", 1, "box=4: the device keeps one summary box per 128-token block")]
    [InlineData("nuq3", "25%", 9, "--sink 9: at most 8 sink tokens")]
    public void WhatTheTierDoesNotTakeIsATypedError(string spec, string budget, int sink, string message)
    {
        var config = spec.StartsWith("nuq", StringComparison.Ordinal) ? Nuq(spec, budget, sink)
            : new KvCacheConfig(spec, spec, 32, sink, Offload: KvOffloadBudget.Parse(budget));
        var e = Assert.Throws<KvSpecException>(() => OffloadFormat.Codecs(config, Books.CreateKvShape()));
        Assert.Contains(message, e.Message);
        Assert.Contains($"--offload-budget {budget} with --kv {spec} on the CUDA device", e.Message);
    }

    [Fact]
    public void PoliciesTheFileTierRingsAndOtherShapesAreRefused()
    {
        var shape = Books.CreateKvShape();
        var policy = Nuq("nuq3", "25%") with { Policy = new KvPolicyConfig(KvPolicyRegistry.Parse("h2o"), KvBudget.Parse("0.5")) };
        Assert.Contains("a token policy", Assert.Throws<KvSpecException>(() => OffloadFormat.Codecs(policy, shape)).Message);
        var dir = Nuq("nuq3", "25%") with { BlockDirectory = "/tmp" };
        Assert.Contains("the file tier (--offload-dir) is the CPU cache's", Assert.Throws<KvSpecException>(() => OffloadFormat.Codecs(dir, shape)).Message);
        var ring = Nuq("nuq3", "25%") with { SlidingRing = true };
        Assert.Contains("sliding-window rings", Assert.Throws<KvSpecException>(() => OffloadFormat.Codecs(ring, shape)).Message);
        Assert.Contains("no offload budget", Assert.Throws<KvSpecException>(() => OffloadFormat.Codecs(Nuq("nuq3", "25%") with { Offload = null }, shape)).Message);
        // Head dim 8 (stories260K's): the device kernels' limit, as a typed error rather than NotSupportedException.
        var small = new ModelConfig
        {
            Architecture = "llama", Dim = 64, Layers = 5, Heads = 8, KvHeads = 4, HeadDim = 8, FfnDim = 172, VocabSize = 512,
            NormEps = 1e-5f, RopeBase = 10000f, RopeDims = 8, RopeStyle = RopeStyle.Normal, ContextLength = 512,
        };
        Assert.Contains("head dim", Assert.Throws<KvSpecException>(() => OffloadFormat.Codecs(new KvCacheConfig("f16", "f16", Offload: KvOffloadBudget.Parse("2%")),
            small.CreateKvShape())).Message);
    }

    [Theory]
    // budget, window, prompt, recent tokens -> device, working, host blocks (128-token blocks)
    [InlineData("25%", 4096, 1000, 32, 8, 18, 32)]      // prefill 8 blocks; 2 x ceil(0.25 x 32) + 2 working slots
    [InlineData("25%", 4096, 10, 32, 4, 18, 32)]        // a short prompt: the first block, one kept, the one filled and the one opened
    [InlineData("25%", 4096, 1024, 32, 9, 18, 32)]      // the first decode step's token opens block 8 before anything moves
    [InlineData("2%", 2_000_000, 100_000, 32, 782, 628, 15625)]
    [InlineData("16", 4096, 1000, 300, 8, 32, 32)]      // 2 x 16 + 2 = 34, at most every block
    [InlineData("7", 4096, 129, 300, 6, 16, 32)]        // recent=300 keeps 3 whole blocks: 1 + 3 + 2
    [InlineData("full", 4000, 1000, 32, 8, 32, 32)]     // `full` reads every block
    [InlineData("25%:dense=1", 4096, 1000, 32, 8, 32, 32)]
    public void TiersAreSizedForThePrefillAndTheBudget(string budget, int window, int prompt, int recent, int device, int working, int host)
    {
        var b = KvOffloadBudget.Parse(budget);
        var sizes = OffloadSizes.For(b, window, prompt, HostSpill.ForRecent(recent));
        Assert.Equal(new OffloadSizes(device, working, host), sizes);
    }

    // Runs as text: xunit's collection asserts over value tuples need reflection the NativeAOT GPU runner lacks.
    private static string Show(List<(int From, int To)> runs) => string.Join(' ', runs.Select(r => $"{r.From}-{r.To}"));

    [Fact]
    public void SpillMovesEveryWholeBlockButTheFirstAndTheRecentOnes()
    {
        var spill = HostSpill.ForRecent(32);
        Assert.Equal(1, spill.KeepRecentBlocks);
        Assert.Equal(3, HostSpill.ForRecent(257).KeepRecentBlocks);
        Assert.Equal(1, HostSpill.ForRecent(0).KeepRecentBlocks);
        var onDevice = Enumerable.Repeat(true, 40).ToArray();
        Assert.Equal("", Show(spill.Runs(383, b => onDevice[b])));                  // 2 whole blocks: the first and the kept one
        Assert.Equal("1-2", Show(spill.Runs(384, b => onDevice[b])));         // 3 whole: block 1 goes
        Assert.Equal("1-6", Show(spill.Runs(7 * 128 + 5, b => onDevice[b])));
        for (int b = 1; b < 6; b++) onDevice[b] = false;                   // moved; then a block moved by hand in between
        onDevice[8] = false;
        Assert.Equal("6-8 9-11", Show(spill.Runs(12 * 128, b => onDevice[b])));
        Assert.Equal("1-2", Show(new HostSpill(0).Runs(2 * 128, _ => true)));   // nothing kept: every whole block but the first
        Assert.Throws<ArgumentOutOfRangeException>(() => new HostSpill(-1));
    }
}
