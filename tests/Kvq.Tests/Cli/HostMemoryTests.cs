using System.Diagnostics;

namespace Kvq.Tests.Cli;

/// <summary>Issue 20's "host memory exhausted gives a clear error, not a crash", on the CPU tier: kvq in a process whose
/// managed heap is capped (DOTNET_GCHeapHardLimit, 16 MiB) so that books-19m loads but its f16 cache of a 2,660-token
/// prompt (11 MB) does not fit: the block arena's failed chunk is one line naming the bytes and what to change, exit
/// code 2, no stack trace (it was an unhandled OutOfMemoryException before).</summary>
public sealed class HostMemoryTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-hostmem-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task ExhaustedHostMemoryIsOneLine()
    {
        var prompt = Path.Combine(_dir, "prompt.txt");
        File.WriteAllText(prompt, TextFixtures.Read(Fixtures.MobyDick).AsSpan(3_000, 9_000));
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in new[] { typeof(Kvq.Cli.Commands.CommandRunner).Assembly.Location, "generate", "-m", Fixtures.BooksGguf, "-f", prompt,
                     "-n", "2", "--kv", "f16", "-t", "1", "--ctx", "4096" })
            psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_GCHeapHardLimit"] = "0x1000000";
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        await p.StandardOutput.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        await p.WaitForExitAsync(cts.Token);
        string e = await err;
        Assert.Equal(2, p.ExitCode);
        Assert.StartsWith("kvq: out of host memory for the KV cache: ", e);
        Assert.Contains("--offload-dir DIR", e);
        Assert.DoesNotContain("   at ", e);
        Assert.Single(e.Trim().Split('\n'));
    }
}
