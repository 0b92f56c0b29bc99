using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;
using Kvq.Cache.Policies;
using Kvq.Cuda.Model;
using Kvq.Model;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Cuda.Tests;

/// <summary>The device KV cache is built from the layout plan the CPU cache uses (<see cref="KvLayoutPlan"/>): the
/// plan's codecs decide what it holds (host), and its bytes follow the plan's (GPU).</summary>
public class CudaKvCachePlanTests(ITestOutputHelper output)
{
    /// <summary>Every format the device stores: f16, and KVQuant nuq2-4 dense and with 1% outliers, and a :mixed one.</summary>
    private static readonly string[] DeviceFormats = ["f16", "nuq2", "nuq3", "nuq4", "nuq2-1%", "nuq3-1%", "nuq4-1%", "nuq3-1%:mixed"];

    private static ModelConfig Config(int headDim, int kvHeads, int heads, int layers = 3) => new()
    {
        Architecture = "llama", Dim = heads * headDim, Layers = layers, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, FfnDim = 256,
        VocabSize = 256, NormEps = 1e-5f, RopeBase = 10000f, RopeDims = headDim, RopeStyle = RopeStyle.Normal, ContextLength = 4096,
    };

    [Fact]
    public void TheDeviceTakesItsCodecsFromThePlan()
    {
        var cfg = Config(64, 2, 6, layers: 4);
        var shape = cfg.CreateKvShape();
        var profile = SyntheticKvQuantProfile.Create(cfg.Layers, cfg.KvHeads, cfg.HeadDim);
        foreach (var spec in DeviceFormats)
        {
            var plan = KvLayoutPlan.Build(shape, new KvCacheConfig(spec, spec, Profile: profile));
            var codecs = CudaKvSequence.Check(plan);
            if (spec == "f16")
            {
                Assert.Null(codecs);
                continue;
            }
            Assert.NotNull(codecs);
            for (int l = 0; l < shape.Layers; l++)
                for (int h = 0; h < shape.KvHeads; h++)
                {
                    // The very codecs the plan built (per head: KVQuant's key scales differ per head).
                    Assert.Same(plan.Keys.CodecOf(l, h), codecs[l].Keys[h]);
                    Assert.Same(plan.Values.CodecOf(l, h), codecs[l].Values[h]);
                    Assert.Equal(((KvQuantSpec)plan.Keys.LayerSpecs[l]).Bits, codecs[l].Keys[h].Spec.Bits);
                }
        }
        // :mixed gives the layers different widths; the device takes each layer's own.
        var mixed = KvLayoutPlan.Build(shape, new KvCacheConfig("nuq3-1%:mixed", "nuq3-1%:mixed", Profile: profile));
        Assert.True(mixed.Keys.LayerSpecs.Select(s => ((KvQuantSpec)s).Bits).Distinct().Count() > 1, "the synthetic profile's :mixed kept one width");
        Assert.True(mixed.Keys.LayerSpecs.All(s => ((KvQuantSpec)s).Bits is >= 2 and <= 4));
        // What the plan builds but the device does not store is refused by name (types, not format strings, decide).
        foreach (var spec in new[] { "q4_0", "q8_0", "nuq4-1%:post", "nuq4:token" })
        {
            var plan = KvLayoutPlan.Build(shape, new KvCacheConfig(spec, spec, Profile: profile));
            var e = Assert.Throws<KvSpecException>(() => CudaKvSequence.Check(plan));
            Assert.Contains(spec, e.Message);
        }
        var policy = KvLayoutPlan.Build(shape, new KvCacheConfig("f16", "f16", Policy: new KvPolicyConfig(KvPolicyRegistry.Parse("h2o"), KvBudget.Parse("0.5"))));
        Assert.Contains("policy", Assert.Throws<KvSpecException>(() => CudaKvSequence.Check(policy)).Message);
    }

    [GpuFact]
    public void PoolBytesFollowTheLayoutPlanForEveryDeviceFormat()
    {
        // books-19m's KV shape (head dim 64, GQA 3), MHA and GQA 4 at head dim 128 (the contiguous decode layout's
        // shapes; here the paged pool, ContiguousNuq off, which every shape and format has).
        foreach (var cfg in new[] { Config(64, 2, 6), Config(128, 4, 4), Config(128, 2, 8) })
        {
            using var model = CudaTransformer.CreateRandom(cfg, new CudaModelOptions(CudaWeightType.F32, ContiguousNuq: false));
            var profile = SyntheticKvQuantProfile.Create(cfg.Layers, cfg.KvHeads, cfg.HeadDim);
            foreach (var spec in DeviceFormats)
            {
                using var cache = model.CreateCache(new KvCacheConfig(spec, spec, Profile: profile), 1000);
                var plan = cache.Plan!;
                Assert.Equal(1024, cache.MaxTokens);
                int heads = plan.Shape.KvHeads, bt = plan.BlockTokens;
                string where = $"{spec}, head dim {cfg.HeadDim}, {cfg.Heads}q/{cfg.KvHeads}kv";
                if (spec == "f16")
                {
                    // f16: the pool is the plan's blocks, byte for byte.
                    Assert.Equal(plan.BytesPerBlock * (cache.MaxTokens / bt), cache.DeviceBytes);
                    Assert.Equal(plan.BytesPerBlock / bt, cache.BytesPerToken);
                    output.WriteLine($"{where}: pool {cache.DeviceBytes:N0} B = plan");
                    continue;
                }
                long arrays = 0, perTokenAll = 0, constants = 0;
                for (int l = 0; l < plan.Shape.Layers; l++)
                {
                    var k = (NuqChannelCodec)plan.Keys.CodecOf(l);
                    var v = (NuqTokenCodec)plan.Values.CodecOf(l);
                    KvBytes kb = plan.Keys.BlockLayout(l), vb = plan.Values.BlockLayout(l);
                    Assert.Equal(kb.Codes, kb.Total);                   // per-channel keys: codes only (scales in the profile)
                    Assert.Equal(vb.Codes + vb.Scales, vb.Total);       // per-token values: codes and a packed zero/range
                    var layer = cache.Nuq![l];
                    Assert.Equal(k.Spec.Bits, layer.KeyBits);
                    Assert.Equal(v.Spec.Bits, layer.ValueBits);
                    // Per token and KV head the device keeps the plan's codes (same packing), the value's zero and
                    // range as two f16 (the CPU packs them into the plan's 16 bits), and fixed 3-byte outlier slots
                    // (f16 value + u8 channel; at least one allocated per side) where the CPU keeps sparse rows.
                    long stored = (kb.Codes + vb.Codes + 2 * vb.Scales) / bt + 3L * (k.OutlierSlots + 2 * v.OutliersPerTail);
                    long allocated = (kb.Codes + vb.Codes + 2 * vb.Scales) / bt + 3L * (Math.Max(k.OutlierSlots, 1) + Math.Max(2 * v.OutliersPerTail, 1));
                    long got = layer.PagedArrays.Sum(a => a.Buffer.Bytes);
                    Assert.True(heads * cache.MaxTokens * allocated + 2 * 16 == got, $"{where} layer {l}: arrays {got} B, plan {heads * cache.MaxTokens * allocated} + 32 spare");
                    arrays += got;
                    perTokenAll += heads * stored;
                    // Per layer and KV head: key zero and range per channel (f32), 16-entry thresholds and levels x 4.
                    constants += heads * (2L * cfg.HeadDim * 4 + 4 * 16 * 4);
                }
                Assert.Equal(perTokenAll, cache.BytesPerToken);
                long table = (128 + cache.MaxTokens / 128) * (cfg.RopeDims / 2 * 8L);
                Assert.Equal(arrays + constants + table, cache.DeviceBytes);
                output.WriteLine($"{where}: pool {cache.DeviceBytes:N0} B (arrays {arrays:N0}, {perTokenAll} B per token stored)");
            }
        }
    }
}
