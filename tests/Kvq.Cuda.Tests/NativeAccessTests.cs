namespace Kvq.Cuda.Tests;

public class NativeAccessTests
{
    [Fact]
    public void ContextCreationEitherWorksOrSaysWhatIsMissing()
    {
        try
        {
            using var ctx = CudaContext.Create();
            Assert.False(string.IsNullOrEmpty(ctx.Device.Name));
        }
        catch (CudaUnavailableException e)
        {
            Assert.False(string.IsNullOrWhiteSpace(e.Reason));
            Assert.StartsWith("CUDA is not available: ", e.Message);
        }
    }

    [Fact]
    public void NvrtcEitherReportsAVersionOrATypedError()
    {
        try
        {
            var (major, _) = NvrtcCompiler.Version();
            Assert.True(major >= 11);
        }
        catch (CudaUnavailableException e)
        {
            Assert.Contains("nvrtc", e.Reason);
        }
    }

    [Fact]
    public void DriverErrorsCarryCallNameAndMessage()
    {
        var e = new CudaException("cuMemAlloc_v2(64 bytes)", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory");
        Assert.Equal("cuMemAlloc_v2(64 bytes) failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory", e.Message);
        Assert.Equal(2, e.Code);
        var n = new NvrtcException("nvrtcCompileProgram(x.cu)", 6, "NVRTC_ERROR_COMPILATION", "x.cu(3): error: bad");
        Assert.Contains("x.cu(3): error: bad", n.Message);
    }

    [Fact]
    public void KernelArgumentsRefuseWhatTheSlotsCannotHold()
    {
        using var a = new KernelArgs();
        a.Add((1m, 2m, 3m, 4m, 5m));   // 80 bytes: a struct argument (model.cu's TileArgs is 160)
        Assert.Throws<ArgumentException>(() => a.Add(((1m, 2m, 3m, 4m, 5m, 6m, 7m, 8m), (1m, 2m, 3m, 4m, 5m, 6m, 7m, 8m), 1m)));   // 272 bytes
        a.Clear();
        for (int i = 0; i < 32; i++) a.Add(i);
        Assert.Throws<InvalidOperationException>(() => a.Add(1));
        a.Clear().Add(1.0).Add(2L);
    }
}

public class CublasTests
{
    [Fact]
    public void CublasIsFoundOrReportedByName()
    {
        try { Native.NativeLibraries.Require(Native.NativeLibraries.Cublas); }
        catch (CudaUnavailableException e) { Assert.Contains("cublas", e.Reason); }
    }

    [GpuFact]
    public void LinearMatchesTheCpu()
    {
        using var ctx = CudaContext.Create();
        using var kernels = new Attention.DecodeKernels(ctx);
        using var blas = new CublasHandle(ctx);
        Assert.True(KernelLab.SevenB.CheckLinear(kernels, blas) < 1e-4);
    }
}
