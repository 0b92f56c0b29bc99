using Kvq.Tests.Eval;

namespace Kvq.Tests.Cli;

/// <summary>`kvq generate|bench --device cuda --offload-budget B` (issue 20, the GPU host tier): what the tier does not
/// take is one line and exit code 2, found before the model goes to a device (so these run without a GPU). The runs on a
/// GPU are tests/Kvq.Cuda.Tests OffloadGenerationGpuTests; bench with a budget runs on the CPU cache here.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class GpuOffloadOptionTests
{
    private static string[] Generate(params string[] extra) =>
        ["generate", "-m", Fixtures.BooksGguf, "-p", "Call me Ishmael.", "-n", "2", "--device", "cuda", .. extra];

    private static string[] Bench(params string[] extra) =>
        ["bench", "-m", Fixtures.BooksGguf, "--ctx", "64", "--decode", "2", "-r", "1", "--device", "cuda", .. extra];

    [Theory]
    [InlineData("generate")]
    [InlineData("bench")]
    public void F16IsNotOffloadedOnTheDevice(string command)
    {
        string[] args = ["--kv", "f16", "--offload-budget", "2%"];
        var r = InProcessCli.Run(command == "generate" ? Generate(args) : Bench(args));
        InProcessCli.AssertUserError(r, "--offload-budget 2% with --kv f16 on the CUDA device: the host tier moves KVQuant blocks");
        Assert.Equal("", r.Out);
    }

    [Theory]
    [InlineData("q4_0", "25%", "KV format 'q4_0' is not available on the CUDA device")]
    [InlineData("kivi2", "25%", "is not available on the CUDA device")]
    [InlineData("f16", "25%:box=4", "box=4: the device keeps one summary box per 128-token block")]
    public void OtherFormatsAndBoxesAreRefused(string kv, string budget, string message) =>
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("--kv", kv, "--offload-budget", budget)), message);

    [Fact]
    public void TooManySinkTokensAreRefused() =>
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("--kv", "f16", "--sink", "9", "--offload-budget", "2%")),
            "--sink 9: at most 8 sink tokens (the decode kernels' limit)");

    [Fact]
    public void TheFileTierStaysOnTheCpu() =>
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("--kv", "f16", "--offload-budget", "2%", "--offload-dir", Path.GetTempPath())),
            "--offload-dir: the file tier is the CPU cache's; with --device cuda the blocks move to pinned host memory");

    [Fact]
    public void OneGpuOnly() =>
        // Refused before any rank is started.
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("--kv", "f16", "--offload-budget", "2%", "--gpus", "2")),
            "--offload-budget with --gpus 2: offloading on the CUDA device runs on one GPU");

    [Fact]
    public void PoliciesAreRefusedFirst() =>
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("--kv", "f16", "--offload-budget", "2%", "--policy", "h2o", "--budget", "0.5")),
            "--policy: token policies run on the CPU cache only");

    [Fact]
    public void BadBudgetsNameThemselves() =>
        InProcessCli.AssertUserError(InProcessCli.Run(Generate("--kv", "f16", "--offload-budget", "25%:rule=best")),
            "offload budget '25%:rule=best': rule 'best' is not bound, mass or total");

    [Fact]
    public void BenchTakesABudgetOnTheCpuToo()
    {
        var r = InProcessCli.Run("bench", "-m", Fixtures.StoriesGguf, "--ctx", "96", "--decode", "4", "-r", "1", "--kv", "f16",
            "--offload-budget", "25%", "-t", "1");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("kv f16 offload@25%", r.Out);
    }
}
