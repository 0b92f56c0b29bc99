using Kvq.Cuda;

namespace Kvq.Tests.Eval;

/// <summary>--device and --device-weights on generate, eval and bench: a bad value names the option, token policies
/// are refused on cuda, and where there is no CUDA, --device cuda is one line saying so (exit 2).</summary>
[Collection(ConsoleCollection.Name)]
public sealed class DeviceOptionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-device-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Text()
    {
        var path = Path.Combine(_dir, "stories.txt");
        File.WriteAllText(path, TextFixtures.Read(Fixtures.Text("tinystories/TinyStories-valid.first1000.txt"))[..3_000]);
        return path;
    }

    private string[] Command(string name) => name switch
    {
        "generate" => ["generate", "-m", Fixtures.StoriesGguf, "-p", "Once upon a time", "-n", "4"],
        "ppl" => ["eval", "ppl", "-m", Fixtures.StoriesGguf, "--text", Text(), "--ctx", "64", "--windows", "1"],
        "kl" => ["eval", "kl", "-m", Fixtures.StoriesGguf, "--text", Text(), "--ctx", "64", "--windows", "1"],
        "recall" => ["eval", "recall", "-m", Fixtures.StoriesGguf, "--text", Text(), "--passage", "10", "--filler", "20", "--samples", "1"],
        "passkey" => ["eval", "passkey", "-m", Fixtures.StoriesGguf, "--lengths", "100", "--trials", "1"],
        "bench" => ["bench", "-m", Fixtures.StoriesGguf, "--ctx", "32", "--decode", "2"],
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [InlineData("generate")]
    [InlineData("ppl")]
    [InlineData("bench")]
    public void BadValuesNameTheOption(string command)
    {
        InProcessCli.AssertUserError(InProcessCli.Run([.. Command(command), "--device", "gpu"]), "--device gpu: expected cpu or cuda");
        InProcessCli.AssertUserError(InProcessCli.Run([.. Command(command), "--device-weights", "q4"]), "--device-weights q4: expected f16 or f32");
    }

    [Theory]
    [InlineData("generate")]
    [InlineData("ppl")]
    [InlineData("bench")]
    public void PoliciesAreRefusedOnCuda(string command) =>
        InProcessCli.AssertUserError(InProcessCli.Run([.. Command(command), "--device", "cuda", "--policy", "h2o", "--budget", "0.5"]),
            "--policy: token policies run on the CPU cache only; not supported with --device cuda");

    [NoCudaTheory]
    [InlineData("generate")]
    [InlineData("ppl")]
    [InlineData("kl")]
    [InlineData("recall")]
    [InlineData("passkey")]
    [InlineData("bench")]
    public void CudaWithoutADeviceIsOneLine(string command)
    {
        var r = InProcessCli.Run([.. Command(command), "--device", "cuda", "--device-weights", "f32"]);
        InProcessCli.AssertUserError(r, "--device cuda: CUDA is not available: ");
        Assert.Equal("", r.Out);
    }

    [Fact]
    public void CpuIsTheDefaultAndNamedInTheReport()
    {
        var r = InProcessCli.Run([.. Command("ppl"), "--device", "cpu", "-t", "2"]);
        Assert.Equal(0, r.Code);
        Assert.Contains("device cpu, 2 threads", r.Out);
        var g = InProcessCli.Run([.. Command("generate"), "-t", "1"]);
        Assert.Equal(0, g.Code);
        Assert.Contains("| cpu, 1 thread", g.Err);
        Assert.Contains("bytes held", g.Err);
    }
}

/// <summary>A theory about a machine without CUDA: skipped where a CUDA device is present.</summary>
public sealed class NoCudaTheoryAttribute : TheoryAttribute
{
    private static readonly Lazy<bool> HasCuda = new(() =>
    {
        try
        {
            using var ctx = CudaContext.Create();
            return true;
        }
        catch (CudaUnavailableException)
        {
            return false;
        }
    });

    public NoCudaTheoryAttribute()
    {
        if (HasCuda.Value) Skip = "a CUDA device is present";
    }
}
