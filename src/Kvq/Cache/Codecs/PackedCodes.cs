using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Kvq.Cache.Codecs;

/// <summary>
/// Unsigned codes of 8, 4 or 2 bits packed in bit planes, q4_0's nibble order generalised: a run of n codes takes
/// n * bits / 8 bytes; with per = 8 / bits codes per byte and stride = n / per, code i lives in byte i % stride at
/// bit bits * (i / stride). Each plane is a contiguous run of codes, so unpacking is a shift and a mask per byte
/// vector. For 4 bits: code j in the low nibble of byte j, code j + n/2 in the high nibble.
/// </summary>
public static class PackedCodes
{
    /// <summary>Whether a run of <paramref name="n"/> codes fills whole bytes.</summary>
    public static bool CanPack(int n, int bits) => n > 0 && n * bits % 8 == 0;

    public static int Bytes(int n, int bits) => n * bits / 8;

    /// <summary>Packs n = codes.Length codes (each below 2^bits) into <see cref="Bytes"/> bytes.</summary>
    public static void Pack(ReadOnlySpan<byte> codes, int bits, Span<byte> dst)
    {
        int stride = Bytes(codes.Length, bits), per = 8 / bits;
        for (int i = 0; i < stride; i++)
        {
            int b = 0;
            for (int k = 0; k < per; k++) b |= codes[k * stride + i] << (bits * k);
            dst[i] = (byte)b;
        }
    }

    /// <summary>dst[i] = code[i] * scale + zero for a run of n codes (SIMD; bit-identical to the reference).</summary>
    public static void Dequantize(ReadOnlySpan<byte> src, int n, int bits, float scale, float zero, Span<float> dst)
    {
        int stride = Bytes(n, bits), per = 8 / bits;
        if (!Vector128.IsHardwareAccelerated) { DequantizeReference(src, n, bits, scale, zero, dst); return; }
        src = src[..stride];
        dst = dst[..n];
        ref byte s = ref MemoryMarshal.GetReference(src);
        ref float o = ref MemoryMarshal.GetReference(dst);
        var vs = Vector128.Create(scale);
        var vz = Vector128.Create(zero);
        var mask = Vector128.Create((byte)((1 << bits) - 1));
        int mask1 = (1 << bits) - 1;
        for (int k = 0; k < per; k++)
        {
            int shift = bits * k;
            int i = 0;
            for (; i + 16 <= stride; i += 16)
            {
                var c = Vector128.ShiftRightLogical(Vector128.LoadUnsafe(ref s, (nuint)i), shift) & mask;
                var (w0, w1) = Vector128.Widen(c);
                Store8(w0, vs, vz, ref Unsafe.Add(ref o, k * stride + i));
                Store8(w1, vs, vz, ref Unsafe.Add(ref o, k * stride + i + 8));
            }
            if (i + 8 <= stride)
            {
                // 8 bytes in the low half (int2 in groups of 32, int4 in groups of 16).
                var c = Vector128.ShiftRightLogical(Vector128.CreateScalar(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref s, i))).AsByte(), shift) & mask;
                Store8(Vector128.WidenLower(c), vs, vz, ref Unsafe.Add(ref o, k * stride + i));
                i += 8;
            }
            for (; i < stride; i++) dst[k * stride + i] = ((src[i] >> shift) & mask1) * scale + zero;
        }
    }

    /// <summary>Eight 16-bit codes to code * scale + zero (multiply then add, unfused, as the reference).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store8(Vector128<ushort> codes, Vector128<float> scale, Vector128<float> zero, ref float o)
    {
        var (u0, u1) = Vector128.Widen(codes);
        (Vector128.ConvertToSingle(u0) * scale + zero).StoreUnsafe(ref o);
        (Vector128.ConvertToSingle(u1) * scale + zero).StoreUnsafe(ref o, 4);
    }

    /// <summary>Scalar twin of <see cref="Dequantize"/>.</summary>
    public static void DequantizeReference(ReadOnlySpan<byte> src, int n, int bits, float scale, float zero, Span<float> dst)
    {
        int stride = Bytes(n, bits), mask = (1 << bits) - 1;
        for (int i = 0; i < n; i++)
            dst[i] = ((src[i % stride] >> (bits * (i / stride))) & mask) * scale + zero;
    }

    /// <summary>The code of value i of a packed run of n codes.</summary>
    public static int Code(ReadOnlySpan<byte> src, int n, int bits, int i)
    {
        int stride = Bytes(n, bits);
        return (src[i % stride] >> (bits * (i / stride))) & ((1 << bits) - 1);
    }
}
