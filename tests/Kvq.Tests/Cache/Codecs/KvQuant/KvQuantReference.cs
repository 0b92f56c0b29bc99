using System.Buffers.Binary;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// Scalar reference of the documented nuq block layouts, written independently of the codecs: codes read bit by bit,
/// f16 through System.Half, sparse outlier rows bit by bit. The codecs' DecodeBlock must match it exactly.
/// </summary>
public static class KvQuantReference
{
    public static int Code(ReadOnlySpan<byte> codes, int i, int bits)
    {
        int v = 0;
        for (int b = 0; b < bits; b++)
        {
            int bit = i * bits + b;
            v |= ((codes[bit >> 3] >> (bit & 7)) & 1) << b;
        }
        return v;
    }

    public static float Half(ReadOnlySpan<byte> block, int offset) => (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(block[offset..]));

    /// <summary>The sparse rows' bytes read by their documented format: u16 count, u8 index width w, then per entry w
    /// bits of index (token * headDim + channel) and 16 bits of f16, little-endian bit order.</summary>
    public static (int Index, float Value)[] Rows(ReadOnlySpan<byte> raw)
    {
        if (raw.Length == 0) return [];
        int n = raw[0] | raw[1] << 8, w = raw[2];
        var outp = new (int, float)[n];
        for (int i = 0; i < n; i++)
        {
            long at = 24 + (long)i * (w + 16);
            int index = 0, half = 0;
            for (int b = 0; b < w; b++, at++) index |= ((raw[(int)(at >> 3)] >> (int)(at & 7)) & 1) << b;
            for (int b = 0; b < 16; b++, at++) half |= ((raw[(int)(at >> 3)] >> (int)(at & 7)) & 1) << b;
            outp[i] = (index, (float)BitConverter.UInt16BitsToHalf((ushort)half));
        }
        return outp;
    }

    private static void ApplyRows(ReadOnlySpan<byte> raw, int count, int headDim, float[] outp)
    {
        foreach (var (index, value) in Rows(raw))
            if (index / headDim < count) outp[index] = value;
    }

    /// <summary>Per-channel key block: codes T*cb; outliers in the sparse rows beside it.</summary>
    public static float[] DecodeChannel(ReadOnlySpan<byte> block, ReadOnlySpan<byte> rows, int headDim, int bits,
        ReadOnlySpan<float> zero, ReadOnlySpan<float> range, ReadOnlySpan<float> levels, int count)
    {
        int cb = (headDim * bits + 7) / 8;
        var outp = new float[count * headDim];
        for (int t = 0; t < count; t++)
        {
            var codes = block.Slice(t * cb, cb);
            for (int c = 0; c < headDim; c++) outp[t * headDim + c] = zero[c] + range[c] * levels[Code(codes, c, bits)];
        }
        ApplyRows(rows, count, headDim, outp);
        return outp;
    }

    /// <summary>A per-token block's packed scale of token t: (zero, range) = (z * range / 16, 2^(r/32 - 16)).</summary>
    public static (float Zero, float Range) Scale(ReadOnlySpan<byte> block, int t)
    {
        int p = BinaryPrimitives.ReadUInt16LittleEndian(block[(2 * t)..]);
        float range = (float)Math.Pow(2, (p & 1023) / 32.0 - 16);
        int z = p >> 10;
        if (z >= 32) z -= 64;
        return (z * (range / 16), range);
    }

    /// <summary>Per-token block: scales T*2 (10-bit log range | 6-bit zero) | codes T*cb; outliers beside it.</summary>
    public static float[] DecodeToken(ReadOnlySpan<byte> block, ReadOnlySpan<byte> rows, int blockTokens, int headDim, int bits,
        ReadOnlySpan<float> levels, int count)
    {
        int cb = (headDim * bits + 7) / 8, codesAt = 2 * blockTokens;
        var outp = new float[count * headDim];
        for (int t = 0; t < count; t++)
        {
            var (zero, range) = Scale(block, t);
            var codes = block.Slice(codesAt + t * cb, cb);
            for (int c = 0; c < headDim; c++) outp[t * headDim + c] = zero + range * levels[Code(codes, c, bits)];
        }
        ApplyRows(rows, count, headDim, outp);
        return outp;
    }

    /// <summary>Index of the nearest level by brute force (ties to the lower level).</summary>
    public static int Nearest(float u, ReadOnlySpan<float> levels)
    {
        int best = 0;
        for (int i = 1; i < levels.Length; i++)
            if (Math.Abs(u - levels[i]) < Math.Abs(u - levels[best])) best = i;
        return best;
    }

    /// <summary>The largest distance from a point of [-1, 1] to its nearest level.</summary>
    public static float MaxError(ReadOnlySpan<float> levels)
    {
        float e = Math.Max(levels[0] + 1, 1 - levels[^1]);
        for (int i = 1; i < levels.Length; i++) e = Math.Max(e, (levels[i] - levels[i - 1]) / 2);
        return e;
    }

    public static float F16(float x) => (float)(Half)x;
}
