using Kvq.Tensors;

namespace Kvq.Cuda.Model;

/// <summary>
/// One weight matrix (out, in) row-major on the device, f16 or f32, and its product y = x W^T through cuBLAS.
/// Quantized GGUF types are dequantized on the host at upload (the issue allows it); f16 source rows go up exactly.
/// Matrices that read the same input can be stacked by rows into one (<see cref="Stack"/>): one product gives all
/// their outputs side by side for a single row (a decode step: one launch instead of three), and each part stays a
/// matrix of its own (<see cref="Slice"/>, a view on the stacked buffer) for products over many rows.
/// </summary>
internal sealed class DeviceMatrix : IDisposable
{
    private readonly bool _owner;
    public DeviceBuffer Buffer { get; }
    /// <summary>Where the matrix starts in <see cref="Buffer"/>, in bytes (non-zero for a view).</summary>
    public long Offset { get; }
    public int Rows { get; }
    public int Cols { get; }
    public CudaWeightType Type { get; }
    private int Elem => Type == CudaWeightType.F16 ? 2 : 4;

    public DeviceMatrix(CudaContext ctx, WeightMatrix w, CudaWeightType type) : this(ctx, [w], type) { }

    private DeviceMatrix(CudaContext ctx, IReadOnlyList<WeightMatrix> parts, CudaWeightType type)
    {
        Cols = parts[0].Cols;
        foreach (var p in parts)
            if (p.Cols != Cols) throw new ArgumentException($"stacked matrices read one input: {p.Cols} columns, not {Cols}", nameof(parts));
        Rows = parts.Sum(p => p.Rows);
        Type = type;
        _owner = true;
        Buffer = ctx.Allocate((long)Rows * Cols * Elem);
        try
        {
            long row0 = 0;
            foreach (var p in parts)
            {
                Upload(p, row0);
                row0 += p.Rows;
            }
        }
        catch
        {
            Buffer.Dispose();
            throw;
        }
    }

    /// <summary>The rows of <paramref name="parts"/> (same column count) one after another in one matrix.</summary>
    public static DeviceMatrix Stack(CudaContext ctx, CudaWeightType type, params WeightMatrix[] parts) => new(ctx, parts, type);

    private void Upload(WeightMatrix w, long row0)
    {
        // Upload in slabs of rows: bounded host memory for large matrices.
        int slabRows = Math.Max(1, Math.Min(w.Rows, (16 << 20) / (Cols * 4)));
        var f32 = new float[slabRows * Cols];
        var f16 = Type == CudaWeightType.F16 ? new Half[slabRows * Cols] : null;
        for (int r0 = 0; r0 < w.Rows; r0 += slabRows)
        {
            int nr = Math.Min(slabRows, w.Rows - r0);
            for (int r = 0; r < nr; r++) w.DequantizeRow(r0 + r, f32.AsSpan(r * Cols, Cols));
            long at = (row0 + r0) * Cols;
            if (f16 != null)
            {
                System.Numerics.Tensors.TensorPrimitives.ConvertToHalf(f32.AsSpan(0, nr * Cols), f16);
                Buffer.CopyFrom(f16.AsSpan(0, nr * Cols), at * 2);
            }
            else Buffer.CopyFrom(f32.AsSpan(0, nr * Cols), at * 4);
        }
    }

    /// <summary>An uninitialised matrix (filled on the device by the caller).</summary>
    public DeviceMatrix(CudaContext ctx, int rows, int cols, CudaWeightType type)
    {
        Rows = rows;
        Cols = cols;
        Type = type;
        _owner = true;
        Buffer = ctx.Allocate((long)rows * cols * Elem);
    }

    private DeviceMatrix(DeviceMatrix whole, int row0, int rows)
    {
        if (row0 < 0 || rows < 1 || row0 + rows > whole.Rows)
            throw new ArgumentOutOfRangeException(nameof(rows), $"rows {row0}..{row0 + rows} of a {whole.Rows}-row matrix");
        Buffer = whole.Buffer;
        Offset = whole.Offset + (long)row0 * whole.Cols * whole.Elem;
        Rows = rows;
        Cols = whole.Cols;
        Type = whole.Type;
    }

    /// <summary>Rows [row0, row0 + rows) as a matrix of their own, sharing this one's memory (disposing it frees nothing).</summary>
    public DeviceMatrix Slice(int row0, int rows) => new(this, row0, rows);

    /// <summary>y [rows][Rows] f32 = x W^T; x is f16 [rows][Cols] for f16 weights, f32 for f32 weights.</summary>
    public void Apply(CublasHandle blas, ulong x, ulong y, int rows)
    {
        if (Type == CudaWeightType.F16) blas.LinearF16(x, Buffer, y, rows, Cols, Rows, Offset);
        else blas.LinearF32(x, Buffer, y, rows, Cols, Rows, Offset);
    }

    /// <summary>Device bytes of this matrix's elements (a view's share of its stacked matrix).</summary>
    public long Bytes => (long)Rows * Cols * Elem;

    public void Dispose()
    {
        if (_owner) Buffer.Dispose();
    }
}
