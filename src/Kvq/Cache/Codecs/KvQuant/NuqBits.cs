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
