using Kvq.Cli;

namespace Kvq.Tests.Cli;

/// <summary>Which NativeAOT sibling the portable kvq execs (dev/publish-kvq.sh): the highest level above its own whose
/// file is there and whose CPU flags are all present.</summary>
public class IsaDispatchTests
{
    private static readonly HashSet<string> Zen4 = ["sse4_2", "popcnt", "avx", "avx2", "fma", "bmi1", "bmi2", "abm", "movbe", "f16c",
        "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512_bf16"];
    private static readonly HashSet<string> Haswell = ["sse4_2", "popcnt", "avx", "avx2", "fma", "bmi1", "bmi2", "abm", "movbe", "f16c"];
    private static readonly HashSet<string> Nehalem = ["sse4_2", "popcnt"];

    private static Func<string, bool> Present(params string[] files) => p => files.Contains(Path.GetFileName(p));

    [Fact]
    public void TheHighestSupportedSiblingWins()
    {
        Assert.Equal("/opt/kvq/kvq-x86-64-v4", IsaDispatch.Choose("/opt/kvq", 2, Zen4, Present("kvq-x86-64-v3", "kvq-x86-64-v4")));
        Assert.Equal("/opt/kvq/kvq-x86-64-v3", IsaDispatch.Choose("/opt/kvq", 2, Haswell, Present("kvq-x86-64-v3", "kvq-x86-64-v4")));
        Assert.Null(IsaDispatch.Choose("/opt/kvq", 2, Nehalem, Present("kvq-x86-64-v3", "kvq-x86-64-v4")));
    }

    [Fact]
    public void AMissingSiblingFallsToTheNext()
    {
        Assert.Equal("/opt/kvq/kvq-x86-64-v3", IsaDispatch.Choose("/opt/kvq", 2, Zen4, Present("kvq-x86-64-v3")));
        Assert.Null(IsaDispatch.Choose("/opt/kvq", 2, Zen4, Present()));
    }

    [Fact]
    public void NoExecToALevelThisImageAlreadyHas()
    {
        Assert.Equal("/k/kvq-x86-64-v4", IsaDispatch.Choose("/k", 3, Zen4, Present("kvq-x86-64-v3", "kvq-x86-64-v4")));
        Assert.Null(IsaDispatch.Choose("/k", 3, Haswell, Present("kvq-x86-64-v3", "kvq-x86-64-v4")));
        Assert.Null(IsaDispatch.Choose("/k", 4, Zen4, Present("kvq-x86-64-v3", "kvq-x86-64-v4")));
    }

    [Fact]
    public void AvxFiveTwelveWithoutAllItsPartsIsNotEnough()
    {
        var partial = new HashSet<string>(Zen4);
        partial.Remove("avx512vl");
        Assert.Equal("/k/kvq-x86-64-v3", IsaDispatch.Choose("/k", 2, partial, Present("kvq-x86-64-v3", "kvq-x86-64-v4")));
    }

    [Fact]
    public void TheJitBuildNeverDispatches()
    {
        // This test process is the JIT: the exec is skipped before the CPU is looked at, whatever sits beside it.
        Assert.True(System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeSupported);
        IsaDispatch.ToFastestBuild(["--version"]);   // returns (an exec would have replaced the test host)
    }
}
