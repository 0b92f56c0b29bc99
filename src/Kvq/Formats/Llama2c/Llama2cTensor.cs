namespace Kvq.Formats.Llama2c;

/// <summary>
/// One f32 array of a llama2.c checkpoint, named as in llama2.c's run.c. A per-layer array stacks one slice per
/// layer (Shape[0] = layers); a global array is a single slice.
/// </summary>
public sealed record Llama2cTensor(string Name, long Offset, int[] Shape, bool PerLayer)
{
    public int Slices => PerLayer ? Shape[0] : 1;

    /// <summary>Elements of one slice (one layer's part, or the whole array when global).</summary>
    public long SliceElements
    {
        get
        {
            long n = 1;
            for (int i = PerLayer ? 1 : 0; i < Shape.Length; i++) n *= Shape[i];
            return n;
        }
    }

    public long SliceBytes => SliceElements * sizeof(float);
    public long ByteSize => SliceBytes * Slices;
    public long End => Offset + ByteSize;
    public long SliceOffset(int slice) => Offset + slice * SliceBytes;
    public string ShapeText => "(" + string.Join(", ", Shape) + ")";
}
