using Kvq.Cache;
using Kvq.Cache.Layout;
using Kvq.Cuda.Distributed;
using Kvq.Cuda.Model;
using Kvq.Model;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Cuda.Tests;

/// <summary>The multi-GPU capacity plan's arithmetic (host), and its KV bytes against what the device cache allocates (GPU).</summary>
public class CapacityPlanTests(ITestOutputHelper output)
{
    private static readonly ModelConfig SevenB = new()
    {
        Architecture = "llama", Dim = 4096, Layers = 32, Heads = 32, KvHeads = 32, HeadDim = 128, FfnDim = 11008, VocabSize = 32000,
        NormEps = 1e-5f, RopeBase = 10000f, RopeDims = 128, RopeStyle = RopeStyle.Normal, ContextLength = 1 << 20,
    };
    private const long H100Bytes = (long)(79.18 * (1L << 30));

    [Fact]
    public void F16BytesAreTheLayoutPlansAndNuqBytesFollowTheDeviceArrays()
    {
        var f16 = CapacityPlan.FormatBytes(SevenB, new KvCacheConfig("f16", "f16"));
        Assert.Equal(2L * 2 * 32 * 4096, f16.DeviceBytesPerToken);   // 512 KiB per token
        var plan = KvLayoutPlan.Build(SevenB.CreateKvShape(), new KvCacheConfig("f16", "f16"));
        Assert.Equal((double)plan.BytesPerBlock / plan.BlockTokens, f16.PlanBytesPerToken);
        // Dense nuq2 at head dim 128: 32 B of key codes + 32 B of value codes + 4 B value zero/range, and one (unused)
        // 3-byte slot each side that the model layout allocates anyway = 74 B per token and KV head.
        var dense = CapacityPlan.FormatBytes(SevenB, new KvCacheConfig("nuq2", "nuq2"));
        Assert.Equal(32L * 32 * 74, dense.DeviceBytesPerToken);
        Assert.Null(dense.PlanBytesPerToken);   // no profile: the layout plan of a KVQuant format cannot be built
        var sparse = CapacityPlan.FormatBytes(SevenB, new KvCacheConfig("nuq2-1%", "nuq2-1%"));
        Assert.True(sparse.DeviceBytesPerToken > dense.DeviceBytesPerToken);
        Assert.Throws<KvSpecException>(() => CapacityPlan.FormatBytes(SevenB, new KvCacheConfig("q4_0", "q4_0")));
    }

    [Fact]
    public void TokensThatFitFillEachGpuToTheLastWholeBlock()
    {
        foreach (var spec in new[] { "f16", "nuq2-1%", "nuq2", "nuq4-1%" })
            foreach (int gpus in new[] { 1, 3, 8 })
            {
                var plan = new CapacityPlan(SevenB, gpus, H100Bytes);
                var f = CapacityPlan.FormatBytes(SevenB, new KvCacheConfig(spec, spec));
                long fit = plan.TokensThatFit(f);
                Assert.Equal(0, fit % (gpus * 128L));
                Assert.True(plan.KvBytesPerGpu(f, fit) + plan.FixedBytes <= plan.GpuBytes, $"{spec} x {gpus}: {fit} tokens do not fit");
                Assert.True(plan.KvBytesPerGpu(f, fit + gpus * 128L) + plan.FixedBytes > plan.GpuBytes, $"{spec} x {gpus}: one more block per GPU fits too");
                output.WriteLine($"7B shape, {spec}, {gpus} x 79.18 GiB: {fit:N0} tokens");
            }
        // The weights of the 7B shape: 6.74 B parameters in f16.
        Assert.InRange(new CapacityPlan(SevenB, 1, H100Bytes).WeightBytes / 1e9, 13.4, 13.6);
        // A GPU too small for the weights holds no tokens.
        Assert.Equal(0, new CapacityPlan(SevenB, 8, 8L << 30).TokensThatFit(CapacityPlan.FormatBytes(SevenB, new KvCacheConfig("nuq2", "nuq2"))));
    }

    [Fact]
    public void TheTimeModelAddsWeightsLocalAttentionAndTheCombine()
    {
        var m = DecodeTimeModel.H100("nuq2");
        var (att1, comb1, _) = m.Step(SevenB, 1_000_000, 1);
        Assert.Equal(70.78, att1, 0.2);   // the measured 1M-token one-GPU figure, back (1,000,064 tokens in whole blocks)
        Assert.Equal(32 * DecodeTimeModel.CombineKernelsUsDefault / 1e3, comb1, 6);
        var (att8, comb8, tot8) = m.Step(SevenB, 8_000_000, 8);
        Assert.Equal(att1, att8, 0.1);    // the same tokens per GPU
        Assert.True(comb8 > comb1 && comb8 < 2, $"combine {comb8} ms");
        Assert.Equal(m.WeightsMs + att8 + comb8, tot8, 9);
        Assert.True(double.IsNaN(DecodeTimeModel.H100AttentionNs7B("q4_0")));
    }

    [GpuFact]
    public void PlanBytesMatchTheDeviceCachesAllocation()
    {
        // books-19m's shape on random weights: a shard's pool of 1024 tokens allocates the plan's bytes per token, plus
        // per layer the small constant arrays (scales, codebooks, spare words) and the angle table.
        var cfg = new ModelConfig
        {
            Architecture = "llama", Dim = 384, Layers = 8, Heads = 6, KvHeads = 2, HeadDim = 64, FfnDim = 1024, VocabSize = 8192,
            NormEps = 1e-5f, RopeBase = 10000f, RopeDims = 64, RopeStyle = RopeStyle.Normal, ContextLength = 4096,
        };
        using var model = CudaTransformer.CreateRandom(cfg, new CudaModelOptions(CudaWeightType.F32, ContiguousNuq: false));
        foreach (var spec in new[] { "f16", "nuq2", "nuq4-1%" })
        {
            var f = CapacityPlan.FormatBytes(cfg, new KvCacheConfig(spec, spec));
            using var seq = spec == "f16"
                ? (CudaKvSequence)model.CreateSequence(new KvCacheConfig("f16", "f16"), 1024)
                : model.CreateKvQuantSequence(_ => ShardedAttentionGpuTests.Codecs(spec, cfg.KvHeads, cfg.HeadDim), 0, 1024, contiguousNuq: false);
            long pool = seq.Cache.DeviceBytes, want = 1024L * f.DeviceBytesPerToken;
            output.WriteLine($"{spec}: pool {pool:N0} bytes, plan {want:N0} ({f.DeviceBytesPerToken} B/token)");
            Assert.InRange(pool - want, 0, 64 * 1024);
        }
    }
}
