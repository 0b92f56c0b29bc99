using Kvq.Tensors;

namespace Kvq.Cuda.Model;

/// <summary>
/// One weight matrix (out, in) row-major on the device, f16 or f32, and its product y = x W^T through cuBLAS.
/// Quantized GGUF types are dequantized on the host at upload (the issue allows it); f16 source rows go up exactly.
/// </summary>
internal sealed class DeviceMatrix : IDisposable
{
    public DeviceBuffer Buffer { get; }
    public int Rows { get; }
    public int Cols { get; }
    public CudaWeightType Type { get; }

    public DeviceMatrix(CudaContext ctx, WeightMatrix w, CudaWeightType type)
    {
        Rows = w.Rows;
        Cols = w.Cols;
        Type = type;
        int elem = type == CudaWeightType.F16 ? 2 : 4;
        Buffer = ctx.Allocate((long)Rows * Cols * elem);
        try
        {
            // Upload in slabs of rows: bounded host memory for large matrices.
            int slabRows = Math.Max(1, Math.Min(Rows, (16 << 20) / (Cols * 4)));
            var f32 = new float[slabRows * Cols];
            var f16 = type == CudaWeightType.F16 ? new Half[slabRows * Cols] : null;
            for (int r0 = 0; r0 < Rows; r0 += slabRows)
            {
                int nr = Math.Min(slabRows, Rows - r0);
                for (int r = 0; r < nr; r++) w.DequantizeRow(r0 + r, f32.AsSpan(r * Cols, Cols));
                if (f16 != null)
                {
                    System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(f32.AsSpan(0, nr * Cols), f16);
                    Buffer.CopyFrom(f16.AsSpan(0, nr * Cols), (long)r0 * Cols * 2);
                }
                else Buffer.CopyFrom(f32.AsSpan(0, nr * Cols), (long)r0 * Cols * 4);
            }
        }
        catch
        {
            Buffer.Dispose();
            throw;
        }
    }

    /// <summary>An uninitialised matrix (filled on the device by the caller).</summary>
    public DeviceMatrix(CudaContext ctx, int rows, int cols, CudaWeightType type)
    {
        Rows = rows;
        Cols = cols;
        Type = type;
        Buffer = ctx.Allocate((long)rows * cols * (type == CudaWeightType.F16 ? 2 : 4));
    }

    /// <summary>y [rows][Rows] f32 = x W^T; x is f16 [rows][Cols] for f16 weights, f32 for f32 weights.</summary>
    public void Apply(CublasHandle blas, ulong x, ulong y, int rows)
    {
        if (Type == CudaWeightType.F16) blas.LinearF16(x, Buffer, y, rows, Cols, Rows);
        else blas.LinearF32(x, Buffer, y, rows, Cols, Rows);
    }

    public long Bytes => Buffer.Bytes;
    public void Dispose() => Buffer.Dispose();
}
