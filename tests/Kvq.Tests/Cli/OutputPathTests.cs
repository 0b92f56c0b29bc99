using Kvq.Tests.Eval;

namespace Kvq.Tests.Cli;

/// <summary>Files kvq writes, as a new user gets them wrong: an --out or --save-session that is a folder or lies under a
/// file is one line and exit code 2 before any work (it was an unhandled IOException with a stack trace and exit code
/// 1, after the whole calibration); so are a --report or --prompt-cache folder that cannot be written (found only after
/// the benchmark, or when the server stopped); --offload-dir leaves no block file behind (ten were left after every
/// run). And a KEYS/VALUES spec with one side empty names the side.</summary>
[Collection(ConsoleCollection.Name)]
public sealed class OutputPathTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-output-path-test-").FullName;
    private static readonly string Stories = Fixtures.StoriesGguf;
    private static readonly string StoriesText = Fixtures.Text("tinystories/TinyStories-valid.first1000.txt");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string AFile()
    {
        var file = Path.Combine(_dir, "notes.txt");
        File.WriteAllText(file, "a file, not a folder");
        return file;
    }

    [Fact]
    public void CalibrateOutOnAFolderFailsBeforeCalibrating()
    {
        var folder = Directory.CreateDirectory(Path.Combine(_dir, "p.kvqp")).FullName;
        var r = InProcessCli.Run("calibrate", "-m", Stories, "--text", StoriesText, "--samples", "2", "--length", "64", "--out", folder);
        // One line (AssertUserError): no progress line, so the check came before the work.
        InProcessCli.AssertUserError(r, $"--out: cannot write {folder}: it is a folder");
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void CalibrateOutUnderAFileFailsBeforeCalibrating()
    {
        var file = AFile();
        var target = Path.Combine(file, "p.kvqp");
        InProcessCli.AssertUserError(
            InProcessCli.Run("calibrate", "-m", Stories, "--text", StoriesText, "--samples", "2", "--length", "64", "--out", target),
            $"--out: cannot write {target}: {file} is a file, not a folder");
    }

    [Fact]
    public void SaveSessionUnderAFileFailsBeforeGenerating()
    {
        var file = AFile();
        var target = Path.Combine(file, "s.kvqs");
        var r = InProcessCli.Run("generate", "-m", Stories, "-p", "Once upon a time", "-n", "2", "--save-session", target);
        InProcessCli.AssertUserError(r, $"--save-session: cannot write {target}: {file} is a file, not a folder");
        Assert.Equal("", r.Out);
        Assert.Equal("a file, not a folder", File.ReadAllText(file));
    }

    [Fact]
    public void SaveSessionOnAFolderFailsBeforeGenerating()
    {
        var folder = Directory.CreateDirectory(Path.Combine(_dir, "s.kvqs")).FullName;
        var r = InProcessCli.Run("generate", "-m", Stories, "-p", "Once upon a time", "-n", "2", "--save-session", folder);
        InProcessCli.AssertUserError(r, $"--save-session: cannot write {folder}: it is a folder");
        Assert.Empty(Directory.GetFileSystemEntries(folder));
    }

    [Fact]
    public void SaveSessionIntoANewFolderStillWorks()
    {
        var target = Path.Combine(_dir, "new", "s.kvqs");
        var r = InProcessCli.Run("generate", "-m", Stories, "-p", "Once upon a time", "-n", "2", "--temperature", "0", "--save-session", target);
        Assert.Equal(0, r.Code);
        Assert.True(new FileInfo(target).Length > 0);
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp", SearchOption.AllDirectories));
    }

    [Fact]
    public void ServePromptCacheUnderAFileFailsAtStart()
    {
        // It was accepted, and the cache was lost when the server stopped ("prompt cache not saved").
        var file = AFile();
        var target = Path.Combine(file, "pc");
        InProcessCli.AssertUserError(InProcessCli.Run("serve", "-m", Stories, "--port", "0", "--prompt-cache", target),
            $"--prompt-cache: cannot write {target}: {file} is a file, not a folder");
    }

    [Fact]
    public void BenchServeReportUnderAFileFailsBeforeTheBenchmark()
    {
        // It ran the whole benchmark, then said "Could not find a part of the path".
        var file = AFile();
        var target = Path.Combine(file, "r");
        var r = InProcessCli.Run("bench", "serve", "-m", Stories, "--kv", "f16", "--requests", "2", "--prompt-tokens", "32",
            "--output-tokens", "4", "--concurrency", "1", "--report", target);
        InProcessCli.AssertUserError(r, $"--report: cannot write {target}: {file} is a file, not a folder");
        Assert.Equal("", r.Out);
    }

    [Theory]
    [InlineData("f16/", "KV spec 'f16/': the values' format is missing")]
    [InlineData("/q8_0", "KV spec '/q8_0': the keys' format is missing")]
    public void AKvSpecWithAnEmptySideSaysWhichSide(string kv, string expected) =>
        // It said "unknown KV format ''".
        InProcessCli.AssertUserError(InProcessCli.Run("generate", "-m", Stories, "-p", "Once", "-n", "2", "--kv", kv), expected);

    /// <summary>An --offload-dir that is a file (or a read-only folder) is one line and exit code 2 before generating: it
    /// was an unhandled IOException ("The file ... already exists") with a stack trace and exit code 1.</summary>
    [Fact]
    public void OffloadDirOnAFileFailsBeforeGenerating()
    {
        var file = AFile();
        var r = InProcessCli.Run("generate", "-m", Stories, "-p", "Once upon a time", "-n", "2", "--offload-budget", "25%", "--offload-dir", file);
        InProcessCli.AssertUserError(r, $"--offload-dir: cannot write {file}: it is a file, not a folder");
        Assert.Equal("", r.Out);
        Assert.Equal("a file, not a folder", File.ReadAllText(file));
    }

    [Fact]
    public void OffloadDirIsEmptyAfterTheRun()
    {
        var blocks = Directory.CreateDirectory(Path.Combine(_dir, "blocks")).FullName;
        var r = InProcessCli.Run("generate", "-m", Stories, "-p", "Once upon a time", "-n", "8", "--temperature", "0",
            "--offload-budget", "25%", "--offload-dir", blocks);
        Assert.Equal(0, r.Code);
        Assert.Contains("offload@25%", r.Err);
        Assert.Empty(Directory.GetFileSystemEntries(blocks));
    }
}
