using System.Text.Json;
using Kvq.Tests.Eval;

namespace Kvq.Tests.Cli;

/// <summary>--preemption swap with --swap-budget/--swap-disk and --disk-prefix-cache (serve, chat, bench serve): bad
/// values refused with one line and exit code 2; a bench run that swaps to files completes every request and leaves no
/// file behind.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class KvTierOptionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-tier-options-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("--preemption maybe", "--preemption maybe: expected recompute or swap")]
    [InlineData("--swap-budget 1GiB", "--swap-budget, --swap-disk and --swap-dir need --preemption swap")]
    [InlineData("--preemption swap --swap-budget lots", "--swap-budget: 'lots' is not a size")]
    [InlineData("--preemption swap --swap-budget -3", "--swap-budget: '-3' is not a size")]
    [InlineData("--preemption swap --swap-budget 0", "--swap-budget 0 keeps nothing in host memory: give --swap-disk SIZE")]
    [InlineData("--preemption swap --swap-disk 0", "--swap-disk: '0' is not a size")]
    [InlineData("--preemption swap --swap-dir x", "--swap-dir: give --swap-disk SIZE too")]
    [InlineData("--disk-prefix-cache 1XB", "--disk-prefix-cache: '1XB': unknown size unit")]
    [InlineData("--disk-prefix-dir x", "--disk-prefix-dir: give --disk-prefix-cache SIZE too")]
    [InlineData("--disk-prefix-cache 1MiB --no-prefix-cache", "--disk-prefix-cache needs the prefix cache")]
    [InlineData("--preemption swap --policy h2o --budget 64", "--preemption swap: under a token policy preemption recomputes")]
    public void BenchServeRefusesBadTierValues(string options, string message)
    {
        var r = InProcessCli.Run(["bench", "serve", "-m", Fixtures.StoriesGguf, "--requests", "2", "--prompt-tokens", "20", "--output-tokens", "2",
            "-t", "1", .. options.Split(' ')]);
        InProcessCli.AssertUserError(r, message);
    }

    [Theory]
    [InlineData("--preemption swap --swap-budget 0 --swap-disk 4GiB --swap-dir FILE", "--swap-dir: cannot write FILE: it is a file, not a folder")]
    [InlineData("--preemption swap --swap-disk 4GiB --swap-dir FILE/swap", "--swap-dir: cannot write FILE/swap: FILE is a file, not a folder")]
    [InlineData("--disk-prefix-cache 1GiB --disk-prefix-dir FILE/prefixes", "--disk-prefix-dir: cannot write FILE/prefixes: FILE is a file, not a folder")]
    [InlineData("--disk-prefix-cache 1MiB --policy h2o --budget 64", "--disk-prefix-cache: prefixes under a token policy")]
    public void ServeRefusesBadTierValuesBeforeLoadingTheModel(string options, string message)
    {
        var file = Path.Combine(_dir, "a-file");
        File.WriteAllText(file, "x");
        var r = InProcessCli.Run(["serve", "-m", Path.Combine(_dir, "missing.gguf"), .. options.Replace("FILE", file, StringComparison.Ordinal).Split(' ')]);
        InProcessCli.AssertUserError(r, message.Replace("FILE", file, StringComparison.Ordinal));
        Assert.Equal("x", File.ReadAllText(file));
    }

    /// <summary>bench serve probes the folders before the benchmark too (it loaded the model and ran the requests, each
    /// swap quietly recomputed).</summary>
    [Theory]
    [InlineData("--preemption swap --swap-budget 0 --swap-disk 1MiB --swap-dir FILE/s", "--swap-dir: cannot write FILE/s: FILE is a file, not a folder")]
    [InlineData("--disk-prefix-cache 1MiB --disk-prefix-dir FILE/p", "--disk-prefix-dir: cannot write FILE/p: FILE is a file, not a folder")]
    public void BenchServeRefusesAnUnwritableFolderBeforeTheBenchmark(string options, string message)
    {
        var file = Path.Combine(_dir, "a-file");
        File.WriteAllText(file, "x");
        var r = InProcessCli.Run(["bench", "serve", "-m", Fixtures.StoriesGguf, "--requests", "2", "--prompt-tokens", "20", "--output-tokens", "2",
            "-t", "1", .. options.Replace("FILE", file, StringComparison.Ordinal).Split(' ')]);
        InProcessCli.AssertUserError(r, message.Replace("FILE", file, StringComparison.Ordinal));
        Assert.Equal("", r.Out);
    }

    /// <summary>Eight requests at 6 clients on a budget that admits several but cannot grow them all to 160 tokens:
    /// preempted requests go to files (no host memory for them), every request completes, and the swap folder is gone
    /// afterwards.</summary>
    [Fact]
    public void BenchServeSwapsToFilesAndCleansUp()
    {
        var text = Path.Combine(_dir, "stories.txt");
        File.WriteAllText(text, TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..30_000]);
        var swapDir = Path.Combine(_dir, "swap");
        var prefixDir = Path.Combine(_dir, "prefix");
        var r = InProcessCli.Run("bench", "serve", "-m", Fixtures.StoriesGguf, "--text", text, "--kv", "f32", "--kv-budget", "400KiB",
            "--requests", "8", "--prompt-tokens", "60", "--output-tokens", "100", "-C", "6", "-t", "1", "--step-tokens", "64",
            "--preemption", "swap", "--swap-budget", "0", "--swap-disk", "64MiB", "--swap-dir", swapDir,
            "--disk-prefix-cache", "16MiB", "--disk-prefix-dir", prefixDir, "--json");
        Assert.True(r.Code == 0, r.Err);
        var row = JsonDocument.Parse(r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Single()).RootElement;
        Assert.Equal(8, row.GetProperty("completed").GetInt32());
        long preemptions = row.GetProperty("preemptions").GetInt64();
        Assert.True(preemptions > 0, "the budget was meant to force preemptions");
        // With no host memory for swaps and room on disk, every preemption is a swap to a file, and each comes back.
        Assert.Equal(0, row.GetProperty("swap_out_host").GetInt64());
        Assert.Equal(preemptions, row.GetProperty("swap_out_file").GetInt64());
        Assert.Equal(preemptions, row.GetProperty("swap_in_file").GetInt64());
        Assert.Equal(0, row.GetProperty("swap_recomputes").GetInt64());
        Assert.True(row.GetProperty("swap_out_file_bytes").GetInt64() > 0);
        Assert.Empty(Directory.Exists(swapDir) ? Directory.GetFileSystemEntries(swapDir) : []);
        Assert.Empty(Directory.Exists(prefixDir) ? Directory.GetFileSystemEntries(prefixDir) : []);
    }
}
