using Kvq.Cuda.Distributed;

namespace Kvq.Cuda.Tests;

/// <summary>A test that needs a CUDA device and the NCCL library (libnccl.so.2; KVQ_NCCL names it): skipped, with the
/// reason, where either is missing. dev/gpu/device-gpu-tests.sh finds NCCL in the GPU machine's PyTorch.</summary>
public sealed class NcclFactAttribute : FactAttribute
{
    private static readonly Lazy<string?> Missing = new(() =>
    {
        try
        {
            using var ctx = CudaContext.Create();
            NvrtcCompiler.Version();
            NcclCommunicator.Version();
            return null;
        }
        catch (CudaUnavailableException e) { return e.Reason; }
        catch (CudaException e) { return e.Message; }
        catch (NcclException e) { return e.Message; }
    });

    public NcclFactAttribute()
    {
        if (Missing.Value is { } why) Skip = $"no usable CUDA device or NCCL library here: {why}";
    }
}
