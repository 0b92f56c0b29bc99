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

    public void SetStream(CudaStream? stream) => Cublas.Check(Cublas.cublasSetStream(handle, stream?.Handle ?? IntPtr.Zero), "cublasSetStream_v2");

    /// <summary>y = x W^T for row-major x [rows][k] (f16), W [outFeatures][k] (f16); y [rows][outFeatures] in f32
    /// (<paramref name="f32Out"/>) or f16.</summary>
    public unsafe void Linear(DeviceBuffer x, DeviceBuffer w, DeviceBuffer y, int rows, int k, int outFeatures, bool f32Out = true)
    {
        long need = (long)rows * k * 2, wneed = (long)outFeatures * k * 2, yneed = (long)rows * outFeatures * (f32Out ? 4 : 2);
        if (x.Bytes < need || w.Bytes < wneed || y.Bytes < yneed)
            throw new ArgumentException($"linear {rows}x{k} by {outFeatures}x{k}: buffers of {x.Bytes}, {w.Bytes}, {y.Bytes} bytes (need {need}, {wneed}, {yneed})");
        float alpha = 1f, beta = 0f;
        // Column-major view: y^T [out][rows] = W [out][k] (stored as k x out column-major, so transposed) * x^T [k][rows].
        Cublas.Check(Cublas.cublasGemmEx(handle, Cublas.OpT, Cublas.OpN, outFeatures, rows, k, &alpha, w.Pointer, Cublas.R16F, k,
            x.Pointer, Cublas.R16F, k, &beta, y.Pointer, f32Out ? Cublas.R32F : Cublas.R16F, outFeatures, Cublas.Compute32F, Cublas.GemmDefault),
            $"cublasGemmEx(linear {rows}x{k} -> {outFeatures})");
    }

    /// <summary>The same in f32: x [rows][k], W [outFeatures][k], y [rows][outFeatures], all f32, f32 compute
    /// (no TF32: the default math mode), for products that must match the CPU's f32 arithmetic.</summary>
    public unsafe void LinearF32(ulong x, DeviceBuffer w, ulong y, int rows, int k, int outFeatures)
    {
        if (w.Bytes < (long)outFeatures * k * 4)
            throw new ArgumentException($"linear f32 {rows}x{k} by {outFeatures}x{k}: weight buffer of {w.Bytes} bytes");
        float alpha = 1f, beta = 0f;
        Cublas.Check(Cublas.cublasGemmEx(handle, Cublas.OpT, Cublas.OpN, outFeatures, rows, k, &alpha, w.Pointer, Cublas.R32F, k,
            x, Cublas.R32F, k, &beta, y, Cublas.R32F, outFeatures, Cublas.Compute32F, Cublas.GemmDefault),
            $"cublasGemmEx(linear f32 {rows}x{k} -> {outFeatures})");
    }

    /// <summary>f16 x and W, f32 y, by raw device addresses (activation buffers are sliced per chunk).</summary>
    public unsafe void LinearF16(ulong x, DeviceBuffer w, ulong y, int rows, int k, int outFeatures)
    {
        if (w.Bytes < (long)outFeatures * k * 2)
            throw new ArgumentException($"linear f16 {rows}x{k} by {outFeatures}x{k}: weight buffer of {w.Bytes} bytes");
        float alpha = 1f, beta = 0f;
        Cublas.Check(Cublas.cublasGemmEx(handle, Cublas.OpT, Cublas.OpN, outFeatures, rows, k, &alpha, w.Pointer, Cublas.R16F, k,
            x, Cublas.R16F, k, &beta, y, Cublas.R32F, outFeatures, Cublas.Compute32F, Cublas.GemmDefault),
            $"cublasGemmEx(linear f16 {rows}x{k} -> {outFeatures})");
    }

    protected override bool ReleaseHandle() => Cublas.cublasDestroy(handle) == 0;
}
