using System.Diagnostics;
using Kvq.Cli.Commands;
using Kvq.Tests.Eval;

namespace Kvq.Tests.Cli;

/// <summary>`kvq generate --gpus N` (issue 21): bad uses are one line and exit code 2 before any model work, and the
/// launcher's supervision of its ranks (one process per GPU): a rank that fails or dies stops the others and is named.
/// The ranks themselves need GPUs and NCCL (tests/Kvq.Cuda.Tests, docs/multigpu.md).</summary>
[Collection(ConsoleCollection.Name)]
public sealed class GpusOptionTests
{
    private static string[] Generate(params string[] extra) => ["generate", "-m", Fixtures.StoriesGguf, "-p", "Once", "-n", "2", .. extra];

    [Fact]
    public void GpusNeedTheCudaDevice() =>
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("--gpus", "2")), "--gpus 2: sequence parallelism runs on GPUs: add --device cuda");

    [Fact]
    public void NegativeGpusAreRefused() =>
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("--gpus", "-1", "--device", "cuda")), "--gpus -1: expected a whole number >= 0");

    [Fact]
    public void MissingGpusAreNamed()
    {
        // This machine has no CUDA driver (or, on a GPU machine, fewer than 64 devices): either way one line, exit 2.
        var r = InProcessCli.Run(Generate("--gpus", "64", "--device", "cuda"));
        Assert.Equal(2, r.Code);
        Assert.Matches("--gpus 64: (CUDA is not available|this machine has [0-9]+ CUDA device)", r.Err);
    }

    private static Dictionary<string, string> Env(int rank) => new() { [RankLauncher.RankEnv] = rank.ToString(), [RankLauncher.WorldEnv] = "3" };

    [Fact]
    public void EveryRankRunsWithItsEnvironment()
    {
        // Each rank checks its own rank and world size; all exit 0.
        var log = new StringWriter();
        int code = RankLauncher.Run("/bin/sh", ["-c", """case "$KVQ_RANK" in 0|1|2) test "$KVQ_WORLD" = 3 ;; *) exit 9 ;; esac"""], 3, Env, log);
        Assert.Equal(0, code);
        Assert.Equal("", log.ToString());
    }

    [Fact]
    public void ARankThatFailsStopsTheOthers()
    {
        // Rank 1 fails at once; ranks 0 and 2 would wait 60 s (as in a collective with a dead peer): they are stopped.
        var log = new StringWriter();
        var clock = Stopwatch.StartNew();
        int code = RankLauncher.Run("/bin/sh", ["-c", """if [ "$KVQ_RANK" = 1 ]; then exit 3; fi; sleep 60"""], 3, Env, log);
        Assert.True(clock.Elapsed.TotalSeconds < 30, $"the launcher waited {clock.Elapsed.TotalSeconds:F0} s");
        Assert.Equal(1, code);
        Assert.Contains("rank 1 (GPU 1) exited with code 3; the other ranks were stopped", log.ToString());
    }

    [Fact]
    public void ARankKilledBySignalIsNamed()
    {
        var log = new StringWriter();
        int code = RankLauncher.Run("/bin/sh", ["-c", """if [ "$KVQ_RANK" = 2 ]; then kill -9 $$; fi; sleep 60"""], 3, Env, log);
        Assert.Equal(1, code);
        Assert.Contains("rank 2 (GPU 2)", log.ToString());
        Assert.Contains("signal 9", log.ToString());
    }
}

/// <summary>`kvq inspect --gpus N --ctx T`: the multi-GPU capacity plan (docs/multigpu.md).</summary>
[Collection(ConsoleCollection.Name)]
public sealed class InspectGpusTests
{
    [Fact]
    public void SevenBShapeOnEightGpusAtTenMillionTokens()
    {
        var r = InProcessCli.Run("inspect", "--shape", "llama-7b", "--gpus", "8", "--ctx", "10000000", "--kv", "f16,nuq2-1%,nuq2");
        Assert.Equal(0, r.Code);
        Assert.Contains("sequence parallelism over 8 GPUs of 79.18 GiB, 10,000,000 tokens (1,249,920 per GPU", r.Out);
        Assert.Contains("weights (f16, replicated) 12.55 GiB", r.Out);
        // Dense nuq2: 74 B per token and KV head on the device, 32 x 32 of them; 7,405,568 tokens fit, not 10M.
        Assert.Contains("| nuq2 | 75,776 | - |", r.Out);
        Assert.Contains("| no | 7,405,568 |", r.Out);
        Assert.Contains("| f16 | 524,288 | 524,288 |", r.Out);
        Assert.Contains("time model:", r.Out);
    }

    [Fact]
    public void AModelFilePlanNeedsTheFormats()
    {
        InProcessCli.AssertUserError(InProcessCli.Run("inspect", Fixtures.StoriesGguf, "--gpus", "2"), "--gpus plans the KV cache: give the formats with --kv");
        InProcessCli.AssertUserError(InProcessCli.Run("inspect", "--shape", "llama-7b", "--kv", "nuq2"), "--shape plans sequence parallelism: give --gpus N");
        InProcessCli.AssertUserError(InProcessCli.Run("inspect", "--shape", "gpt-9", "--gpus", "1", "--kv", "nuq2"), "--shape gpt-9: expected llama-7b");
        var ok = InProcessCli.Run("inspect", Fixtures.StoriesGguf, "--kv", "f16", "--gpus", "2", "--ctx", "1000");
        Assert.Equal(0, ok.Code);
        Assert.Contains("sequence parallelism over 2 GPUs", ok.Out);
    }
}
