using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// Fixed-width per-token outlier slots (dense-and-sparse's sparse part, appendable in O(1)): per token,
/// <see cref="Slots"/> f16 values and as many channel indices (1 byte when the head dim is below 255, else 2).
/// Unused slots hold the index <see cref="Empty"/>. Region offsets are relative to the start of a block.
/// </summary>
internal readonly struct OutlierSlots(int slots, int headDim, int blockTokens, int valuesOffset, int indicesOffset)
{
    public int Slots => slots;
    public int IndexBytes => headDim < 255 ? 1 : 2;
    public int Empty => headDim < 255 ? 0xFF : 0xFFFF;
    public int ValueBytes => blockTokens * slots * 2;
    public int IndicesBytes => blockTokens * slots * IndexBytes;

    public static int IndexBytesFor(int headDim) => headDim < 255 ? 1 : 2;

    /// <summary>Writes slot s of a token: value x at channel c (or an empty slot when c &lt; 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Set(Span<byte> block, int token, int s, int c, float x)
    {
        int i = token * slots + s;
        ushort h = c < 0 ? (ushort)0 : QuantFormats.SingleToHalf(Math.Clamp(x, -65504f, 65504f));
        Unsafe.WriteUnaligned(ref block[valuesOffset + 2 * i], h);
        int idx = c < 0 ? Empty : c;
        if (IndexBytes == 1) block[indicesOffset + i] = (byte)idx;
        else Unsafe.WriteUnaligned(ref block[indicesOffset + 2 * i], (ushort)idx);
    }

    /// <summary>Overwrites the decoded row of one token with its exact outliers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Apply(ReadOnlySpan<byte> block, int token, Span<float> row)
    {
        int empty = Empty;
        for (int s = 0; s < slots; s++)
        {
            int i = token * slots + s;
            int idx = IndexBytes == 1 ? block[indicesOffset + i]
                : Unsafe.ReadUnaligned<ushort>(ref MemoryMarshal.GetReference(block.Slice(indicesOffset + 2 * i, 2)));
            if (idx == empty) continue;
            row[idx] = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(ref MemoryMarshal.GetReference(block.Slice(valuesOffset + 2 * i, 2))));
        }
    }
}
