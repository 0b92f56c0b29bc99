using Kvq.Cuda;

namespace Kvq.Cuda.Tests;

/// <summary>A test that needs a CUDA device: skipped, with the reason, where there is none (CI has no GPU; the GPU
/// image has no .NET, so on a GPU machine the kernel lab's checks play this role: dev/kernels/README.md).</summary>
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
