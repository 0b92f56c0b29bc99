using System.Runtime.InteropServices;
using Kvq.Cuda.Native;

namespace Kvq.Cuda;

/// <summary>
/// Owns a cuBLAS handle (bound to the context current at creation, the primary context) and runs the GEMMs of a
/// transformer: f16 operands, f32 accumulation, f16 or f32 output. Row-major helpers: y[m][n] = x[m][k] * W[n][k]^T,
/// the layout of GGUF/llama weight rows.
/// </summary>
public sealed class CublasHandle : SafeHandle
{
    public CublasHandle(CudaContext ctx) : base(IntPtr.Zero, true)
    {
        NativeLibraries.Require(NativeLibraries.Cublas);
        ctx.MakeCurrent();
        Cublas.Check(Cublas.cublasCreate(out var h), "cublasCreate_v2");
        SetHandle(h);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    private DeviceBuffer? _workspace;

    /// <summary>Sends later products to <paramref name="stream"/> (null: the legacy default stream). cublasSetStream puts
    /// the handle back on cuBLAS's own workspace pool, so a workspace given by <see cref="SetWorkspace"/> is set again.</summary>
    public void SetStream(CudaStream? stream)
    {
        Cublas.Check(Cublas.cublasSetStream(handle, stream?.Handle ?? IntPtr.Zero), "cublasSetStream_v2");
        if (_workspace != null) ApplyWorkspace();
    }

    /// <summary>Gives the handle a workspace of its own (the caller keeps <paramref name="workspace"/> alive): products then
    /// allocate nothing, so they can be captured into a CUDA graph, and captured and direct products see the same
    /// workspace size (cuBLAS picks its kernel by it), so both give the same bits.</summary>
    public void SetWorkspace(DeviceBuffer workspace)
    {
        _workspace = workspace;
        ApplyWorkspace();
    }

    private void ApplyWorkspace() =>
        Cublas.Check(Cublas.cublasSetWorkspace(handle, _workspace!.Pointer, (nuint)_workspace.Bytes), $"cublasSetWorkspace_v2({_workspace.Bytes} bytes)");

    /// <summary>y = x W^T for row-major x [rows][k] (f16), W [outFeatures][k] (f16); y [rows][outFeatures] in f32
    /// (<paramref name="f32Out"/>) or f16.</summary>
    public void Linear(DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, int rows, int k, int outFeatures, bool f32Out = true)
    {
        long need = (long)rows * k * 2, yneed = (long)rows * outFeatures * (f32Out ? 4 : 2);
        if (x.Bytes < need || y.Bytes < yneed)
            throw new ArgumentException($"linear {rows}x{k} by {outFeatures}x{k}: buffers of {x.Bytes}, {w.Bytes}, {y.Bytes} bytes (need {need}, {(long)outFeatures * k * 2}, {yneed})");
        Gemm(x.Pointer, w, 0, y.Pointer, rows, k, outFeatures, Cublas.R16F, f32Out ? Cublas.R32F : Cublas.R16F);
    }

    /// <summary>The same in f32: x [rows][k], W [outFeatures][k], y [rows][outFeatures], all f32, f32 compute
    /// (no TF32: the default math mode), for products that must match the CPU's f32 arithmetic.</summary>
    public void LinearF32(ulong x, DeviceBuffer w, ulong y, int rows, int k, int outFeatures, long wOffset = 0) =>
        Gemm(x, w, wOffset, y, rows, k, outFeatures, Cublas.R32F, Cublas.R32F);

    /// <summary>f16 x and W, f32 y, by raw device addresses (activation buffers are sliced per chunk); W starts
    /// <paramref name="wOffset"/> bytes into <paramref name="w"/> (a matrix that is rows of a stacked one).</summary>
    public void LinearF16(ulong x, DeviceBuffer w, ulong y, int rows, int k, int outFeatures, long wOffset = 0) =>
        Gemm(x, w, wOffset, y, rows, k, outFeatures, Cublas.R16F, Cublas.R32F);

    /// <summary>y = x W^T with x and W of type <paramref name="inType"/>, y of <paramref name="outType"/>, f32 compute.
    /// Column-major view: y^T [out][rows] = W [out][k] (stored as k x out column-major, so transposed) * x^T [k][rows].</summary>
    private unsafe void Gemm(ulong x, DeviceBuffer w, long wOffset, ulong y, int rows, int k, int outFeatures, int inType, int outType)
    {
        long wneed = (long)outFeatures * k * (inType == Cublas.R32F ? 4 : 2);
        if (wOffset < 0 || w.Bytes - wOffset < wneed)
            throw new ArgumentException($"linear {rows}x{k} by {outFeatures}x{k}: weight buffer of {w.Bytes} bytes from byte {wOffset} (need {wneed})");
        float alpha = 1f, beta = 0f;
        Cublas.Check(Cublas.cublasGemmEx(handle, Cublas.OpT, Cublas.OpN, outFeatures, rows, k, &alpha, w.Pointer + (ulong)wOffset, inType, k,
            x, inType, k, &beta, y, outType, outFeatures, Cublas.Compute32F, Cublas.GemmDefault),
            $"cublasGemmEx(linear {(inType == Cublas.R32F ? "f32" : "f16")} {rows}x{k} -> {outFeatures})");
    }

    protected override bool ReleaseHandle() => Cublas.cublasDestroy(handle) == 0;
}
