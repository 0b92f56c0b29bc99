using System.Runtime.InteropServices;

namespace Kvq.Cuda.Attention;

/// <summary>The kernels' AttnArgs struct, passed by value (same field order and sizes as decode_attention.cu).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct AttnArgs
{
    public int N, Sink, ChunksPerSplit, Splits;
    public float Scale;
    public double Log2Base;
}
