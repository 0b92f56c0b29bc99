using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// Unpack-and-look-up of one token's B-bit codes in one pass (no codes buffer): row[c] = lut[c * stride + code_c].
/// stride = 2^B for per-channel tables (keys), 0 for one table per token (values). Whole bytes (B = 2, 4) or 3-byte
/// groups of 8 codes (B = 3) at a time; the tail code by code.
/// </summary>
internal static class NuqDecode
{
    public static void Row(ReadOnlySpan<byte> packed, int bits, ReadOnlySpan<float> lut, int stride, Span<float> row)
    {
        int d = row.Length, c = 0;
        if ((long)(d - 1) * stride + (1 << bits) > lut.Length || packed.Length < NuqBits.Bytes(d, bits))
            throw new ArgumentException($"decode of {d} {bits}-bit codes: table of {lut.Length}, {packed.Length} bytes");
        ref float l = ref MemoryMarshal.GetReference(lut);
        ref byte p = ref MemoryMarshal.GetReference(packed);
        ref float r = ref MemoryMarshal.GetReference(row);
        switch (bits)
        {
            case 4:
                for (int i = 0; c + 2 <= d; i++, c += 2)
                {
                    int b = Unsafe.Add(ref p, i);
                    Unsafe.Add(ref r, c) = Unsafe.Add(ref l, c * stride + (b & 15));
                    Unsafe.Add(ref r, c + 1) = Unsafe.Add(ref l, (c + 1) * stride + (b >> 4));
                }
                break;
            case 2:
                for (int i = 0; c + 4 <= d; i++, c += 4)
                {
                    int b = Unsafe.Add(ref p, i);
                    Unsafe.Add(ref r, c) = Unsafe.Add(ref l, c * stride + (b & 3));
                    Unsafe.Add(ref r, c + 1) = Unsafe.Add(ref l, (c + 1) * stride + ((b >> 2) & 3));
                    Unsafe.Add(ref r, c + 2) = Unsafe.Add(ref l, (c + 2) * stride + ((b >> 4) & 3));
                    Unsafe.Add(ref r, c + 3) = Unsafe.Add(ref l, (c + 3) * stride + (b >> 6));
                }
                break;
            case 3:
                for (int i = 0; c + 8 <= d; i += 3, c += 8)
                {
                    int v = Unsafe.Add(ref p, i) | Unsafe.Add(ref p, i + 1) << 8 | Unsafe.Add(ref p, i + 2) << 16;
                    for (int j = 0; j < 8; j++) Unsafe.Add(ref r, c + j) = Unsafe.Add(ref l, (c + j) * stride + ((v >> (3 * j)) & 7));
                }
                break;
        }
        for (; c < d; c++) row[c] = lut[c * stride + NuqErrorBound.Code(packed, c, bits)];
    }
}
