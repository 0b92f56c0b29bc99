using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Kvq.Tensors.Quant;

/// <summary>
/// One row of a weight matrix in any supported ggml type: dequantize it, or dot it with an f32 vector without
/// materialising it. The dispatch is per row (not per element), so the switch costs nothing measurable.
/// </summary>
public static unsafe class RowKernels
{
    /// <summary>Decodes <paramref name="dst"/>.Length values of a row starting at <paramref name="row"/>.</summary>
    public static void Dequantize(GgmlType type, byte* row, Span<float> dst)
    {
        int n = dst.Length;
        switch (type)
        {
            case GgmlType.F32:
                new ReadOnlySpan<float>(row, n).CopyTo(dst);
                break;
            case GgmlType.F16:
                HalfDot.ToSingle(new ReadOnlySpan<Half>(row, n), dst);
                break;
            case GgmlType.BF16:
                Bf16.ToSingle(new ReadOnlySpan<ushort>(row, n), dst);
                break;
            default:
                QuantFormats.Dequantize(type, new ReadOnlySpan<byte>(row, (int)GgmlTypeInfo.RowBytes(type, n)), dst);
                break;
        }
    }

    /// <summary>Dot product of a row of <paramref name="x"/>.Length values with <paramref name="x"/>.</summary>
    public static float Dot(GgmlType type, byte* row, ReadOnlySpan<float> x)
    {
        switch (type)
        {
            case GgmlType.F32:
                return TensorPrimitives.Dot(new ReadOnlySpan<float>(row, x.Length), x);
            case GgmlType.F16:
                return HalfDot.Dot(new ReadOnlySpan<Half>(row, x.Length), x);
            default:
            {
                // Generic path: decode a chunk at a time onto the stack and dot it; quantized types get fused kernels.
                if (QuantFormats.HasFusedDot(type))
                    return QuantFormats.Dot(type, new ReadOnlySpan<byte>(row, (int)GgmlTypeInfo.RowBytes(type, x.Length)), x);
                const int Chunk = 256;
                Span<float> buf = stackalloc float[Chunk];
                float sum = 0;
                long bytesPerChunk = GgmlTypeInfo.RowBytes(type, Chunk);
                int i = 0;
                for (; i + Chunk <= x.Length; i += Chunk)
                {
                    Dequantize(type, row + i / Chunk * bytesPerChunk, buf);
                    sum += TensorPrimitives.Dot(buf, x.Slice(i, Chunk));
                }
                if (i < x.Length)
                {
                    var tail = buf[..(x.Length - i)];
                    Dequantize(type, row + GgmlTypeInfo.RowBytes(type, i), tail);
                    sum += TensorPrimitives.Dot(tail, x[i..]);
                }
                return sum;
            }
        }
    }
}

/// <summary>bfloat16 &lt;-&gt; float: bf16 is the upper half of an IEEE float.</summary>
public static class Bf16
{
    public static void ToSingle(ReadOnlySpan<ushort> src, Span<float> dst)
    {
        var d = MemoryMarshal.Cast<float, uint>(dst);
        for (int i = 0; i < src.Length; i++) d[i] = (uint)src[i] << 16;
    }

    /// <summary>Round-to-nearest-even, NaN kept quiet (as ggml does).</summary>
    public static ushort FromSingle(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if ((u & 0x7fffffff) > 0x7f800000) return (ushort)((u >> 16) | 64);
        return (ushort)((u + (0x7fff + ((u >> 16) & 1))) >> 16);
    }
}
