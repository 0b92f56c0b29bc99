using System.Runtime.CompilerServices;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>B-bit codes packed little-endian into bytes: code i occupies bits [iB, iB+B) of the stream.</summary>
public static class NuqBits
{
    public static int Bytes(int count, int bits) => (count * bits + 7) >> 3;

    public static void Pack(ReadOnlySpan<byte> codes, int bits, Span<byte> dst)
    {
        int n = codes.Length, o = 0, have = 0;
        if (dst.Length < Bytes(n, bits)) throw new ArgumentException($"{n} codes of {bits} bits need {Bytes(n, bits)} bytes, got {dst.Length}");
        ulong acc = 0;
        for (int i = 0; i < n; i++)
        {
            acc |= (ulong)codes[i] << have;
            have += bits;
            if (have >= 32)
            {
                Unsafe.WriteUnaligned(ref dst[o], (uint)acc);
                o += 4;
                acc >>= 32;
                have -= 32;
            }
        }
        for (; have > 0; have -= 8, acc >>= 8) dst[o++] = (byte)acc;
    }

    /// <summary>Writes code <paramref name="i"/> (the low <paramref name="bits"/> of <paramref name="code"/>) in place,
    /// leaving every other bit of <paramref name="packed"/> as it was.</summary>
    public static void Set(Span<byte> packed, int i, int bits, int code)
    {
        int bit = i * bits, at = bit >> 3, sh = bit & 7;
        if (bits < 1 || bits > 8 || at >= packed.Length || (sh + bits > 8 && at + 1 >= packed.Length))
            throw new ArgumentException($"code {i} of {bits} bits does not fit {packed.Length} bytes");
        int mask = ((1 << bits) - 1) << sh, v = (code << sh) & mask;
        packed[at] = (byte)((packed[at] & ~mask) | v);
        if (sh + bits > 8) packed[at + 1] = (byte)((packed[at + 1] & ~(mask >> 8)) | (v >> 8));
    }

    public static void Unpack(ReadOnlySpan<byte> src, int bits, Span<byte> codes)
    {
        int n = codes.Length, i = 0, have = 0, s = 0;
        uint mask = (1u << bits) - 1;
        ulong acc = 0;
        int bytes = Bytes(n, bits);
        if (src.Length < bytes) throw new ArgumentException($"{n} codes of {bits} bits need {bytes} bytes, got {src.Length}");
        while (i < n)
        {
            if (have < bits)
            {
                if (s + 4 <= bytes)
                {
                    acc |= (ulong)Unsafe.ReadUnaligned<uint>(ref Unsafe.AsRef(in src[s])) << have;
                    s += 4;
                    have += 32;
                }
                else
                {
                    acc |= (ulong)src[s++] << have;
                    have += 8;
                }
            }
            while (have >= bits && i < n)
            {
                codes[i++] = (byte)(acc & mask);
                acc >>= bits;
                have -= bits;
            }
        }
    }
}
