namespace Kvq.Cuda.Tests;

/// <summary>A test that needs a CUDA device: skipped, with the reason, where there is none (CI has no GPU). On a GPU
/// machine (no .NET there) these tests, and every other test of this assembly, run through dev/gpu/GpuTests, a NativeAOT
/// runner with this assembly compiled in: dev/gpu/stage-gpu-tests.sh stages it, dev/gpu/device-gpu-tests.sh runs it
/// with --no-skip (a GpuFact that skips there is a failure); logs in docs/gpu-runs/ (dev/gpu/README.md). The runner
/// reads Skip as xunit does, so this attribute needs nothing more.</summary>
public sealed class GpuFactAttribute : FactAttribute
{
    private static readonly Lazy<string?> Missing = new(() =>
    {
        try
        {
            using var ctx = CudaContext.Create();
            NvrtcCompiler.Version();
            return null;
        }
        catch (CudaUnavailableException e) { return e.Reason; }
        catch (CudaException e) { return e.Message; }
    });

    public GpuFactAttribute()
    {
        if (Missing.Value is { } why) Skip = $"no usable CUDA device here: {why}";
    }
}

/// <summary>A theory that needs a CUDA device (InlineData rows; not MemberData, which the NativeAOT runner cannot
/// publish): skipped with <see cref="GpuFactAttribute"/>'s reason where there is none.</summary>
public sealed class GpuTheoryAttribute : TheoryAttribute
{
    public GpuTheoryAttribute()
    {
        if (new GpuFactAttribute().Skip is { } why) Skip = why;
    }
}
