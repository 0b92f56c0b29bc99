using System.Diagnostics;
using System.Runtime.Intrinsics.X86;
using System.Text.Json;
using Xunit.Abstractions;

namespace Kvq.Tests.Tensors;

/// <summary>
/// The AVX2 paths on a machine that has AVX-512: a child kvq process started with the runtime's AVX-512 switches off
/// (DOTNET_EnableAVX512F=0, and .NET 10's DOTNET_EnableAVX512=0) takes the AVX2 branches of every dispatch (f16 weight
/// dots, the q8_0 codec, attention's f16 tiles and softmax, the Hadamard rotation), and must measure the perplexity
/// that a child with the default dispatch measures. Its report's machine line proves which instruction set ran.
/// </summary>
public sealed class Avx2DispatchTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-avx2-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private (Process Process, Task<string> Out, Task<string> Err, string Report) Start(string name, bool disableAvx512)
    {
        var report = Path.Combine(_dir, name);
        var text = Path.Combine(_dir, "moby.txt");
        if (!File.Exists(text)) File.WriteAllText(text, TextFixtures.Read(Fixtures.Text("books/pg2489_moby_dick.txt"))[20_000..60_000]);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "kvq.dll"), "eval", "ppl", "-m", Fixtures.BooksGguf,
                     "--text", text, "--ctx", "128", "--windows", "2",
                     "--kv", "f32,f16,q8_0,int4:rot,q4_0/int8", "-t", "2", "--report", report })
            psi.ArgumentList.Add(a);
        if (disableAvx512)
        {
            psi.Environment["DOTNET_EnableAVX512F"] = "0";
            psi.Environment["DOTNET_EnableAVX512"] = "0";
        }
        var p = Process.Start(psi)!;
        return (p, p.StandardOutput.ReadToEndAsync(), p.StandardError.ReadToEndAsync(), report);
    }

    private (Dictionary<string, double> Ppl, string Machine) Finish(string name, (Process Process, Task<string> Out, Task<string> Err, string Report) run)
    {
        var (p, stdout, stderr, report) = run;
        using var _ = p;
        // A few seconds on a quiet machine; generous for a loaded one.
        if (!p.WaitForExit(600_000)) { p.Kill(); Assert.Fail($"{name}: kvq eval did not finish in 10 minutes"); }
        Assert.True(p.ExitCode == 0, $"{name}: exit code {p.ExitCode}\n{stderr.Result}\n{stdout.Result}");
        var ppl = File.ReadAllLines(Path.Combine(report, "results.jsonl"))
            .Select(l => JsonDocument.Parse(l).RootElement)
            .ToDictionary(x => x.GetProperty("kv").GetString()!, x => x.GetProperty("ppl").GetDouble());
        // run.json's machine line: "CPU, N cores, AVX-512|AVX2|no AVX2, OS, .NET version".
        string machine = JsonDocument.Parse(File.ReadAllText(Path.Combine(report, "run.json"))).RootElement.GetProperty("machine").GetString()!;
        output.WriteLine($"{name}: {machine}");
        var simd = machine.Split(", ").Where(part => part is "AVX-512" or "AVX2" or "no AVX2").ToArray();
        return (ppl, Assert.Single(simd));
    }

    [Avx2Fact("starts kvq with AVX-512 switched off to take the AVX2 branches")]
    public void Avx2DispatchMeasuresWhatTheDefaultDispatchMeasures()
    {
        var avx2Run = Start("avx2", disableAvx512: true);
        var nativeRun = Start("native", disableAvx512: false);
        var avx2 = Finish("avx2", avx2Run);
        var native = Finish("native", nativeRun);
        Assert.Equal("AVX2", avx2.Machine);
        Assert.Equal(Avx512F.IsSupported ? "AVX-512" : "AVX2", native.Machine);
        foreach (var (spec, ppl) in native.Ppl)
        {
            double other = avx2.Ppl[spec];
            output.WriteLine($"books-19m, Moby Dick, 2 windows x 128, {spec}: {native.Machine} {ppl:F5}  AVX2 {other:F5}  ({(other / ppl - 1) * 100:+0.0000;-0.0000}%)");
            // Only the order of float sums differs; rounding flips in 4-bit codes moved 2 windows of 128 by 0.23% (int4:rot).
            double tol = spec is "f32" or "f16" ? 1e-4 : 1e-2;
            Assert.InRange(other / ppl, 1 - tol, 1 + tol);
        }
        Assert.Equal(5, avx2.Ppl.Count);
        Assert.True(avx2.Ppl["int4:rot"] > avx2.Ppl["f16"] * 1.001, "int4:rot should cost perplexity over f16 (the codec ran)");
    }
}
