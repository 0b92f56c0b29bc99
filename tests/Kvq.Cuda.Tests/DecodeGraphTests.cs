using System.Text.RegularExpressions;
using Kvq.Cuda.Model;

namespace Kvq.Cuda.Tests;

/// <summary>The host-side logic of decode steps replayed from CUDA graphs, without a device: what goes into the step's
/// device ints, when a graph can be replayed, and the switch.</summary>
public partial class DecodeGraphTests
{
    [Fact]
    public void AStepCarriesTheArgumentsOfTheDirectLaunches()
    {
        // Sequence of 300 tokens whose cache starts at position 1000 (a shard): the query is rotated at the length (as
        // ForwardChunk's pos0), the key at first position + slot (as AppendDevice), attention sees slot + 1 tokens.
        var s = DecodeStep.For(token: 7, length: 300, firstPosition: 1000);
        Assert.Equal(new DecodeStep(7, 300, 1300, 300, 301), s);
        Assert.Equal(new DecodeStep(0, 0, 0, 0, 1), DecodeStep.For(0, 0, 0));
    }

    [Fact]
    public void PackingPutsEachFieldAtItsIndexAndClearsTheRest()
    {
        var ints = Enumerable.Repeat(-9, DecodeStep.Ints + 3).ToArray();
        new DecodeStep(11, 22, 33, 44, 55).Pack(ints);
        Assert.Equal([11, 22, 33, 44, 55, 0, 0, 0, -9, -9, -9], ints);
        Assert.Equal(11, ints[DecodeStep.TokenIndex]);
        Assert.Equal(22, ints[DecodeStep.QueryPositionIndex]);
        Assert.Equal(33, ints[DecodeStep.KeyPositionIndex]);
        Assert.Equal(44, ints[DecodeStep.SlotIndex]);
        Assert.Equal(55, ints[DecodeStep.CountIndex]);
        Assert.Throws<ArgumentException>(() => new DecodeStep(1, 2, 3, 4, 5).Pack(new int[DecodeStep.Ints - 1]));
        Assert.Equal(0x1000UL + 12, DecodeStep.Field(0x1000, DecodeStep.SlotIndex));   // 4 bytes an int
    }

    [Fact]
    public void PositionsBeyondThirtyTwoBitsAreRefusedByName()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => DecodeStep.For(1, int.MaxValue, 0));
        Assert.Contains("32-bit", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodeStep.For(1, 10, int.MaxValue - 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodeStep.For(-1, 10, 0));
        var last = DecodeStep.For(1, int.MaxValue - 1, 0);
        Assert.Equal(int.MaxValue, last.Count);
    }

    [Fact]
    public void TheKernelsReadTheIndicesTheHostWrites()
    {
        var source = KernelSources.Read("model.cu");
        int Define(string name) => int.Parse(Regex.Match(source, $@"#define {name} (\d+)").Groups[1].Value);
        Assert.Equal(DecodeStep.QueryPositionIndex, Define("STEP_QPOS"));
        Assert.Equal(DecodeStep.KeyPositionIndex, Define("STEP_KPOS"));
        Assert.Equal(DecodeStep.SlotIndex, Define("STEP_SLOT"));
        Assert.Equal(DecodeStep.CountIndex, Define("STEP_COUNT"));
        // The five kernels a captured step launches with a step pointer take it after the block table, and a batched
        // step's rows (DecodeRows) last; ModelKernels passes them in that order.
        foreach (var kernel in new[] { "kv_append_f16", "nuq_append_keys", "nuq_append_values", "attn_f16_d##D##_g##G", "attn_nuq_d##D##_g##G" })
        {
            int at = source.IndexOf(kernel + "(", StringComparison.Ordinal);
            Assert.True(at >= 0, kernel);
            int close = source.IndexOf(')', source.IndexOf("const DecodeRow* rows", at, StringComparison.Ordinal));
            var parameters = Regex.Replace(source[at..close], @"[\s\\]+", " ").Trim();
            Assert.EndsWith("const DecodeRow* rows", parameters, StringComparison.Ordinal);
            Assert.Matches(@"const int\* bt, (const HeadBlocks hb, )?const int\* at,", parameters);
        }
    }

    [Fact]
    public void AGraphIsReplayedOnlyForItsSequenceAndSplit()
    {
        var policy = new DecodeGraphPolicy<object>();
        object a = new(), b = new();
        // books-19m on an H100: 2 KV heads, 132 SMs; a split per 128 tokens up to the device's fill.
        AttentionSplit Split(long count) => AttentionSplit.For(count, 1, 2, 132, CudaKvSequence.MaxSplitStates);
        int seed = 41;
        var rng = new Random(seed);
        int start = rng.Next(1, 3000), captures = 0, replays = 0, changes = 0;
        AttentionSplit? last = null;
        for (long count = start; count < start + 700; count++)
        {
            var split = Split(count);
            if (last != null && split != last) changes++;
            last = split;
            if (policy.Next(a, split) == DecodeGraphAction.Replay) replays++;
            else
            {
                captures++;
                policy.Captured(a, split);
            }
        }
        // The first step and one after each change of split run directly and capture; the rest replay.
        Assert.True(changes >= 5, $"seed {seed}: start {start}, {changes} split changes in 700 steps");
        Assert.Equal(1 + changes, captures);
        Assert.Equal(700 - captures, replays);
        var s = Split(start);
        policy.Captured(a, s);
        Assert.Equal(DecodeGraphAction.RunThenCapture, policy.Next(b, s));   // another sequence: other buffers
        Assert.Equal(DecodeGraphAction.Replay, policy.Next(a, s));
        Assert.Equal(DecodeGraphAction.RunThenCapture, policy.Next(a, s with { PerSplit = s.PerSplit + 128 }));
        policy.Forget();
        Assert.Equal(DecodeGraphAction.RunThenCapture, policy.Next(a, s));
    }

    [Theory]
    [InlineData(null, null, true)]
    [InlineData(null, "", true)]
    [InlineData(null, "1", true)]
    [InlineData(null, " on ", true)]
    [InlineData(null, "TRUE", true)]
    [InlineData(null, "0", false)]
    [InlineData(null, "off", false)]
    [InlineData(true, "0", true)]
    [InlineData(false, "1", false)]
    public void TheOptionWinsThenTheEnvironment(bool? option, string? env, bool on) => Assert.Equal(on, DecodeGraph.Enabled(option, env));

    [Fact]
    public void AnUnknownSwitchValueIsAnErrorNamingTheVariable()
    {
        var e = Assert.Throws<ArgumentException>(() => DecodeGraph.Enabled(null, "yes please"));
        Assert.Contains(DecodeGraph.EnvSwitch, e.Message);
        Assert.Contains("yes please", e.Message);
    }
}
