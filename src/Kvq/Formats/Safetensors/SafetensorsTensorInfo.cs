namespace Kvq.Formats.Safetensors;

/// <summary>
/// One tensor's entry in a safetensors header. Shape is row-major, outermost first (PyTorch order: a Linear weight
/// is [out, in]). <see cref="DataOffset"/> is from the start of the file; <see cref="HeaderOffset"/> is where the
/// tensor's key sits in the JSON header, for error messages.
/// </summary>
public sealed record SafetensorsTensorInfo(string Name, string DType, long[] Shape, long DataOffset, long ByteSize, long HeaderOffset)
{
    public long Elements { get { long n = 1; foreach (var d in Shape) n *= d; return n; } }
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}
