using Kvq.Cache;
using Kvq.Cache.Offload;
using Kvq.Cuda.Model;
using Kvq.Cuda.Offload;
using Kvq.Generation;
using Kvq.Model;
using Kvq.Sampling;

namespace Kvq.Cuda.Tests;

/// <summary>`kvq generate --device cuda --offload-budget B` end to end, as the CLI runs it (Kvq.Cli GpuOffload): books-19m
/// on the device, a KVQuant cache (synthetic profile) on the host tier made by CudaTransformer.CreateOffloadedKvSequence
/// for the prompt, the Generator in a shifting context window, the old blocks moving to pinned host memory after each
/// decode step (HostSpill), and the report line the CLI prints.</summary>
public class OffloadGenerationGpuTests
{
    private const int Window = 2048, PromptTokens = 1500, NewTokens = 40;

    private static (string Text, OffloadStats? Stats, string? Report, int HostBlocks, int Length) Generate(CudaTransformer model, LoadedModel loaded,
        KvCacheConfig config)
    {
        var rng = new Random(17);
        var prompt = new int[PromptTokens];
        prompt[0] = loaded.Tokenizer.BosId;
        for (int i = 1; i < prompt.Length; i++) prompt[i] = rng.Next(3, loaded.Weights.Config.VocabSize);
        var first = config.Offload != null ? model.CreateOffloadedKvSequence(config, Window, prompt.Length) : null;
        using var window = ContextWindow.Shifting(model, config, Window, first: first);
        var options = new GenerationOptions { MaxTokens = NewTokens, Sampler = SamplerOptions.Greedy };
        var result = new Generator(model, loaded.Tokenizer).Generate(prompt, options, window);
        Assert.True(result.GeneratedTokens > 10, $"{result.GeneratedTokens} tokens generated");   // an end-of-text token may stop it early
        if (window.Sequence is not OffloadedKvSequence off) return (result.Text, null, null, 0, window.Sequence.Length);
        return (result.Text, off.Stats, OffloadReport.Describe(off), off.HostBlocksUsed, off.Length);
    }

    private static KvCacheConfig Config(string spec, string? budget) =>
        new(spec, spec, 32, 1, SyntheticKvQuantProfile.Create(8, 2, 64), Offload: budget == null ? null : KvOffloadBudget.Parse(budget));

    [GpuTheory]
    [InlineData("nuq4")]
    [InlineData("nuq3-1%")]
    public void FullBudgetGeneratesTheOnDeviceText(string spec)
    {
        using var loaded = ModelLoader.Load(CudaModelGpuTests.BooksGguf());
        using var model = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(CudaWeightType.F32, ContiguousNuq: false));
        var device = Generate(model, loaded, Config(spec, null));
        var full = Generate(model, loaded, Config(spec, "full"));
        // `full` reads every block in order with on-device attention's split: the same greedy text.
        Assert.Equal(device.Text, full.Text);
        // Every decode step (each generated token but the last runs one) chose every block of every layer and KV head;
        // after each, the whole blocks but block 0 and the last whole one moved to the host.
        int steps = full.Length - PromptTokens;
        Assert.True(full.Length / 128 - 2 >= 1, "no block moved");
        Assert.Equal(full.Length / 128 - 2, full.HostBlocks);
        var st = full.Stats!;
        Assert.Equal((long)steps * 8 * 2, st.Selections);
        Assert.Equal(st.HostBlocksChosen, st.Hits + st.DemandFetched);
        Assert.Contains("hit rate", full.Report);
        Assert.Contains("pinned host", full.Report);
    }

    [GpuTheory]
    [InlineData("nuq4", "25%")]
    [InlineData("nuq2", "4")]
    [InlineData("nuq3-1%", "25%:rule=bound,spread=100")]
    public void BudgetGeneratesThroughTheHostTier(string spec, string budget)
    {
        using var loaded = ModelLoader.Load(CudaModelGpuTests.BooksGguf());
        using var model = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(CudaWeightType.F32, ContiguousNuq: false));
        // At the end 13 blocks: 0 (sink), 1-10 on the host, 11-12 (recent) home; 25% or 4 of them is the two forced ones
        // and two ranked, so host blocks are read.
        var run = Generate(model, loaded, Config(spec, budget));
        Assert.False(string.IsNullOrEmpty(run.Text));
        Assert.Equal(run.Length / 128 - 2, run.HostBlocks);
        var st = run.Stats!;
        Assert.True(st.Selections > 0 && st.Selections % (8 * 2) == 0, $"{st.Selections} selections");
        Assert.True(st.HostBlocksChosen > 0, "no host block was read");
        Assert.Equal(st.HostBlocksChosen, st.Hits + st.DemandFetched);
        Assert.InRange(st.HitRate, 0, 1);
        Assert.InRange(st.HiddenShare, 0, 1);
        Assert.Equal(st.DemandFetched * st.BlockBytes, st.DemandBytes);
        // The report names the budget as parsed: a count of blocks reads "4blk".
        var name = KvOffloadBudget.Parse(budget).Name["offload@".Length..];
        Assert.Contains($"offload {name} (GPU host tier): {run.HostBlocks} of {(run.Length + 127) / 128} blocks on the host", run.Report);
    }
}
