using System.Text.Json;
using Kvq.Cache;
using Kvq.Cache.Layout;
using Kvq.Model.Loading;
using Kvq.Tests.Eval;

namespace Kvq.Tests.Cli;

/// <summary>--sliding full|ring: sliding-window layers keep every token or a ring of the blocks their window sees.
/// inspect and eval memory report the ring's bytes per layer from the layout plan; what rings do not combine with is one
/// typed line and exit code 2, before the model is loaded where the command line decides it.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class SlidingOptionTests
{
    private static string Gemma3 => SyntheticFixtures.Get("gemma3");

    [Fact]
    public void InspectReportsTheRingsBytesPerLayer()
    {
        var r = InProcessCli.Run("inspect", Gemma3, "--kv", "f16", "--ctx", "157", "--sliding", "ring");
        Assert.Equal(0, r.Code);
        using var weights = GgufModelLoader.Load(Gemma3);
        var plan = KvLayoutPlan.Build(weights.Config.CreateKvShape(), KvCacheConfig.Parse("f16") with { SlidingRing = true });
        // window 32, blocks of 32: at most 2 blocks; at 157 tokens the next query sees 126..157, blocks 3 and 4.
        long block = plan.BytesPerLayerBlock(0);
        Assert.Contains($"f16, --sliding ring, blocks per layer at 157 tokens: layers 0-4 (window 32, ring of at most 2 blocks): 2 blocks, {2 * block:N0} bytes each; " +
                        $"layers 5 (global): 5 blocks, {5 * plan.BytesPerLayerBlock(5):N0} bytes each", r.Out);
        Assert.Contains($"| {plan.MemoryAt(157).TotalBytes / 1048576.0:F2} |", r.Out);

        var full = InProcessCli.Run("inspect", Gemma3, "--kv", "f16", "--ctx", "157");
        Assert.Equal(0, full.Code);
        Assert.Contains("f16, --sliding full, blocks per layer at 157 tokens: layers 0-4 (window 32, every token kept): 5 blocks", full.Out);
    }

    [Fact]
    public void EvalMemoryMeasuresTheRingAsThePlanCountsIt()
    {
        var r = InProcessCli.Run("eval", "memory", "-m", Gemma3, "--kv", "f16,q8_0", "--ctx", "100,1000", "--sliding", "ring", "--json");
        Assert.Equal(0, r.Code);
        var rows = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(4, rows.Count);
        foreach (var row in rows)
            Assert.Equal(row.GetProperty("layout_bytes").GetInt64(), row.GetProperty("kv_bytes").GetInt64());
        var full = InProcessCli.Run("eval", "memory", "-m", Gemma3, "--kv", "f16", "--ctx", "1000", "--json");
        long fullBytes = JsonDocument.Parse(full.Out.Trim()).RootElement.GetProperty("kv_bytes").GetInt64();
        Assert.True(rows[1].GetProperty("kv_bytes").GetInt64() * 3 < fullBytes, "5 of 6 layers hold 2 blocks instead of 32");
    }

    [Fact]
    public void CombinationsRingsDoNotSupportExitTwo()
    {
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", Gemma3, "--sliding", "wide", "--prompt", "x"),
            "--sliding wide: expected full (every token) or ring");
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", Gemma3, "--sliding", "ring", "--policy", "h2o", "--budget", "0.5", "--prompt", "x"),
            "--sliding ring does not combine with --policy h2o");
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", Gemma3, "--sliding", "ring", "--sink", "4", "--prompt", "x"),
            "--sliding ring does not combine with --sink 4");
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", Gemma3, "--sliding", "ring", "--offload-budget", "25%", "--prompt", "x"),
            "--sliding ring does not combine with --offload-budget");
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", Gemma3, "--sliding", "ring", "--save-session", "s.kvq", "--prompt", "x"),
            "--sliding ring does not combine with --save-session");
        InProcessCli.AssertUserError(InProcessCli.Run("bench", "-m", Gemma3, "--sliding", "ring", "--policy", "h2o", "--budget", "0.5"),
            "--sliding ring does not combine with --policy");
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "memory", "-m", Gemma3, "--sliding", "ring", "--kv", "f16", "--offload-budget", "25%"),
            "--sliding ring does not combine with --offload-budget");
        // The codec's own refusal (it stages recent tokens) comes from the layout plan: a KvSpecException, also exit 2.
        InProcessCli.AssertUserError(InProcessCli.Run("eval", "memory", "-m", Gemma3, "--sliding", "ring", "--kv", "kivi4", "--ctx", "64"),
            "do not combine with a codec that stages recent tokens (kivi4)");
        InProcessCli.AssertUserError(InProcessCli.Run("inspect", Gemma3, "--kv", "kivi4", "--sliding", "ring"),
            "do not combine with a codec that stages recent tokens (kivi4)");
    }

    [Fact]
    public void GenerateWithRingsWritesTheSameTokensAsFullStorage()
    {
        string[] Args(string sliding) => ["generate", "-m", Gemma3, "--kv", "f32", "--sliding", sliding, "--prompt", "Once upon a time",
            "--max-tokens", "48", "--temperature", "0", "--threads", "1"];
        var ring = InProcessCli.Run(Args("ring"));
        var full = InProcessCli.Run(Args("full"));
        Assert.Equal(0, ring.Code);
        Assert.Equal(0, full.Code);
        Assert.Equal(full.Out, ring.Out);
    }
}
