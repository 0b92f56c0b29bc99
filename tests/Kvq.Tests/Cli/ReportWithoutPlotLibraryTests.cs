using System.Diagnostics;

namespace Kvq.Tests.Cli;

/// <summary>
/// `--report` draws PNG plots through SkiaSharp's native library. A kvq copied without it (as the NativeAOT binary
/// alone was) must fail at once with one line naming the library and the fix, exit code 2, before any work; with the
/// library beside it the same command writes its plots. Run on a real copy of the kvq build without the library, in a
/// child process (a process that has loaded SkiaSharp cannot unload it).
/// </summary>
public sealed class ReportWithoutPlotLibraryTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-noskia-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [LinuxFact("copies the linux-x64 build of kvq and leaves out libSkiaSharp.so")]
    public void WithoutTheLibraryReportFailsAtOnceWithTheFix()
    {
        var app = CopyOfKvq(withSkia: false);
        var report = Path.Combine(_dir, "report");
        var r = Run(app, "eval", "memory", "-m", Fixtures.StoriesGguf, "--kv", "f16", "--ctx", "64", "--report", report);
        Assert.Equal(2, r.Code);
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("kvq: --report draws PNG plots with SkiaSharp, whose native library (libSkiaSharp.so) could not be loaded beside kvq in " + app, lines[0]);
        Assert.EndsWith("copy libSkiaSharp.so from the publish folder next to kvq, or leave out --report", lines[0].TrimEnd());
        Assert.False(Directory.Exists(report), "nothing is written before the check");
        Assert.Equal("", r.Out);
        // Without --report the copy works: only plotting needs the library.
        var plain = Run(app, "eval", "memory", "-m", Fixtures.StoriesGguf, "--kv", "f16", "--ctx", "64");
        Assert.True(plain.Code == 0, plain.Err);
        Assert.Contains("| f16 |", plain.Out);
    }

    [LinuxFact("copies the linux-x64 build of kvq with libSkiaSharp.so")]
    public void WithTheLibraryTheSameCommandPlots()
    {
        var app = CopyOfKvq(withSkia: true);
        var report = Path.Combine(_dir, "report");
        var r = Run(app, "eval", "memory", "-m", Fixtures.StoriesGguf, "--kv", "f16", "--ctx", "64,128", "--report", report);
        Assert.True(r.Code == 0, r.Err);
        Assert.True(new FileInfo(Path.Combine(report, "kv_memory_vs_ctx.png")).Length > 1000);
    }

    /// <summary>kvq's own build output (kvq.dll, its dependencies, deps and runtimeconfig), with linux-x64's native
    /// libraries and, if asked, SkiaSharp's.</summary>
    private string CopyOfKvq(bool withSkia)
    {
        var source = KvqBuildFolder();
        var app = Directory.CreateDirectory(Path.Combine(_dir, withSkia ? "with" : "without")).FullName;
        foreach (var f in Directory.GetFiles(source)) File.Copy(f, Path.Combine(app, Path.GetFileName(f)));
        var native = Directory.CreateDirectory(Path.Combine(app, "runtimes", "linux-x64", "native")).FullName;
        foreach (var f in Directory.GetFiles(Path.Combine(source, "runtimes", "linux-x64", "native")))
            if (withSkia || !Path.GetFileName(f).StartsWith("libSkiaSharp", StringComparison.Ordinal))
                File.Copy(f, Path.Combine(native, Path.GetFileName(f)));
        return app;
    }

    private static string KvqBuildFolder()
    {
        // The test runs from tests/Kvq.Tests/bin/CONFIG/TFM/; kvq's build is src/Kvq.Cli/bin/CONFIG/TFM/.
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string tfm = here.Name, config = here.Parent!.Name;
        for (var d = here; d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Kvq.slnx")))
            {
                var folder = Path.Combine(d.FullName, "src", "Kvq.Cli", "bin", config, tfm);
                if (File.Exists(Path.Combine(folder, "kvq.dll"))) return folder;
                throw new FileNotFoundException($"kvq's build not found in {folder}: build src/Kvq.Cli -c {config}");
            }
        throw new DirectoryNotFoundException("Kvq.slnx not found above " + here.FullName);
    }

    private static (int Code, string Out, string Err) Run(string app, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(app, "kvq.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5))) { p.Kill(entireProcessTree: true); Assert.Fail("kvq did not finish in 5 minutes"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
