using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Offload;
using Kvq.Cuda.Model;
using Kvq.Cuda.Offload;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Cuda.Tests;

/// <summary>The device cache's host tier (issue 20, Offload/OffloadedKvSequence) on a small random model: `full` mode
/// against on-device attention, and a budget's choices, copies and counters.</summary>
public class OffloadGpuTests
{
    // Small, odd where it can be: 3 layers, 8 query heads over 2 KV heads (GQA 4), head dim 64, RoPE over the whole head.
    private static readonly ModelConfig Small = new()
    {
        Architecture = "llama", Dim = 512, Layers = 3, Heads = 8, KvHeads = 2, HeadDim = 64, FfnDim = 704, VocabSize = 300,
        NormEps = 1e-5f, RopeBase = 10000f, RopeDims = 64, RopeStyle = RopeStyle.Normal, ContextLength = 4096,
    };

    private static (NuqChannelCodec[] Keys, NuqTokenCodec[] Values) Codecs(string spec)
    {
        var s = KvQuantSpec.TryParse(spec) ?? throw new ArgumentException(spec);
        var keys = new NuqChannelCodec[Small.KvHeads];
        var values = new NuqTokenCodec[Small.KvHeads];
        for (int h = 0; h < keys.Length; h++)
        {
            keys[h] = new NuqChannelCodec(s, KvSide.Key, 32, Small.HeadDim, new float[Small.HeadDim], Enumerable.Repeat(1.75f, Small.HeadDim).ToArray(),
                NuqCodebook.Uniform(s.Bits));
            values[h] = new NuqTokenCodec(s, KvSide.Value, 32, Small.HeadDim, NuqCodebook.Uniform(s.Bits));
        }
        return (keys, values);
    }

    [GpuTheory]
    [InlineData("nuq2", true)]
    [InlineData("nuq3-1%", false)]
    public void FullModeEqualsOnDeviceAttention(string spec, bool speculate)
    {
        using var model = CudaTransformer.CreateRandom(Small, new CudaModelOptions(CudaWeightType.F32, MaxBatch: 16), seed: 3);
        const int tokens = 1000, steps = 5, blocks = (tokens + steps + 127) / 128;   // 8 blocks, the last partial
        using var device = model.CreateKvQuantSequence(_ => Codecs(spec), 1, tokens + steps, contiguousNuq: false);
        using var off = model.CreateOffloadedKvQuantSequence(_ => Codecs(spec), 1, tokens + steps, KvOffloadBudget.Parse("full"),
            new OffloadSizes(DeviceBlocks: blocks, WorkingBlocks: blocks, HostBlocks: blocks, Speculate: speculate));
        model.FillSyntheticKv([device, off], tokens, chunk: 333, seed: 11);
        off.MoveToHost(1, 6);   // blocks 1-5 to the host; 0 (the sink) and 6-7 (recent, partial) stay home
        Assert.Equal(5, off.HostBlocksUsed);
        var a = new float[Small.VocabSize];
        var b = new float[Small.VocabSize];
        int token = 7;
        for (int s = 0; s < steps; s++)
        {
            model.Forward([token], device, a);
            model.Forward([token], off, b);
            // The same kernel over the same blocks in the same order, with the same split: the same bits are expected;
            // the bound (rel L2 <= 1e-5) is what is asserted.
            double num = 0, den = 0;
            for (int i = 0; i < a.Length; i++) { double d = a[i] - b[i]; num += d * d; den += (double)a[i] * a[i]; }
            Assert.True(Math.Sqrt(num / den) <= 1e-5, $"step {s}: logits rel L2 {Math.Sqrt(num / den):E2} between full offload and on-device attention");
            token = Argmax(a);
        }
        var st = off.Stats;
        Assert.Equal((long)steps * Small.Layers * Small.KvHeads, st.Selections);
        Assert.Equal(st.Selections * 5, st.HostBlocksChosen);   // every step reads the 5 host blocks
        // The first step brings every host block in (by speculation for layers 1.., on demand for layer 0), later steps hit.
        Assert.Equal(Small.Layers * Small.KvHeads * 5L, st.DemandFetched + st.PrefetchedUsed);
        Assert.Equal(st.HostBlocksChosen - Small.Layers * Small.KvHeads * 5L + st.PrefetchedUsed, st.Hits);
        if (!speculate) Assert.Equal(0L, st.Prefetched);
        else Assert.True(st.PrefetchedUsed > 0, "speculation prefetched nothing that was used");
    }

    [GpuFact]
    public void BudgetReadsTheChosenBlocksAndCountsItsCopies()
    {
        using var model = CudaTransformer.CreateRandom(Small, new CudaModelOptions(CudaWeightType.F32, MaxBatch: 16), seed: 4);
        const int tokens = 2600, steps = 4, blocks = (tokens + steps + 127) / 128;   // 21 blocks
        var budget = KvOffloadBudget.Parse("25%");
        using var full = model.CreateOffloadedKvQuantSequence(_ => Codecs("nuq4"), 1, tokens + steps, KvOffloadBudget.Parse("full"),
            new OffloadSizes(blocks, blocks, blocks));
        using var off = model.CreateOffloadedKvQuantSequence(_ => Codecs("nuq4"), 1, tokens + steps, budget,
            new OffloadSizes(DeviceBlocks: blocks, WorkingBlocks: 8, HostBlocks: blocks));
        model.FillSyntheticKv([full, off], tokens, chunk: 1000, seed: 12);
        off.MoveToHost(1, 18);
        full.MoveToHost(1, 18);
        var a = new float[Small.VocabSize];
        var b = new float[Small.VocabSize];
        for (int s = 0; s < steps; s++)
        {
            model.Forward([5 + s], full, a);
            model.Forward([5 + s], off, b);
            Assert.All(b, x => Assert.True(float.IsFinite(x)));
        }
        // 25% of 21 visible blocks = 6 per head: the sink block, the recent blocks (the 32 tokens before the query span
        // blocks 20 or 19-20) and the best of the rest.
        var st = off.Stats;
        long selections = (long)steps * Small.Layers * Small.KvHeads;
        Assert.Equal(selections, st.Selections);
        Assert.Equal(selections * 6, st.ChosenBlocks);
        Assert.True(st.HostBlocksChosen > 0 && st.HostBlocksChosen <= selections * 4);   // only the 4 ranked blocks can be host blocks
        Assert.Equal(st.HostBlocksChosen, st.Hits + st.DemandFetched);
        Assert.True(st.DemandBytes == st.DemandFetched * st.BlockBytes && st.BlockBytes == 128 * (64 * 4 / 8 * 2 + 4));
        // The approximate read differs from the full one, but not wildly (rel L2 of logits < 1 on random data).
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { double d = a[i] - b[i]; num += d * d; den += (double)a[i] * a[i]; }
        Assert.True(Math.Sqrt(num / den) < 1, $"rel L2 {Math.Sqrt(num / den):E2}");
        Assert.Throws<NotSupportedException>(() => model.Forward([1, 2], off, b));   // prefill chunks once blocks are on the host
    }

    [GpuFact]
    public void HostTierRefusesMoreThanItHolds()
    {
        using var model = CudaTransformer.CreateRandom(Small, new CudaModelOptions(CudaWeightType.F32, MaxBatch: 16), seed: 5);
        using var off = model.CreateOffloadedKvQuantSequence(_ => Codecs("nuq2"), 1, 700, KvOffloadBudget.Parse("50%"), new OffloadSizes(6, 4, 2));
        model.FillSyntheticKv([off], 600, chunk: 600, seed: 1);
        Assert.Throws<HostMemoryException>(() => off.MoveToHost(1, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => off.MoveToHost(3, 5));   // block 4 is not whole (600 tokens)
        off.MoveToHost(1, 3);
        Assert.Throws<InvalidOperationException>(() => off.MoveToHost(2, 3));     // already on the host
    }

    private static int Argmax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
