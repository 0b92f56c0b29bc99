using Kvq.Tensors;

namespace Kvq.Formats.Gguf;

/// <summary>One tensor's entry in the GGUF header. Dims are ggml order: Dims[0] is the contiguous (row) length.</summary>
public sealed record GgufTensorInfo(string Name, long[] Dims, GgmlType Type, long DataOffset, long HeaderOffset)
{
    /// <summary>Number of elements.</summary>
    public long Elements { get { long n = 1; foreach (var d in Dims) n *= d; return n; } }
    public long Rows => Elements / Dims[0];
    public long RowBytes => GgmlTypeInfo.RowBytes(Type, Dims[0]);
    public long ByteSize => Rows * RowBytes;
    public string Shape => "[" + string.Join(", ", Dims) + "]";
}
