using System.Buffers.Binary;
using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// Scalar reference of the documented nuq block layouts, written independently of the codecs: codes read bit by bit,
/// f16 through System.Half, outlier slots by their sentinel. The codecs' DecodeBlock must match it exactly.
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

    public static int Index(ReadOnlySpan<byte> block, int offset, int headDim) =>
        headDim < 255 ? block[offset] : BinaryPrimitives.ReadUInt16LittleEndian(block[offset..]);

    /// <summary>Per-channel key block: outlier values T*S*2 | codes T*cb | indices T*S*ib.</summary>
    public static float[] DecodeChannel(ReadOnlySpan<byte> block, int blockTokens, int headDim, int bits, int slots,
        ReadOnlySpan<float> zero, ReadOnlySpan<float> range, ReadOnlySpan<float> levels, int count)
    {
        int cb = (headDim * bits + 7) / 8, ib = headDim < 255 ? 1 : 2, empty = headDim < 255 ? 0xFF : 0xFFFF;
        int codesAt = blockTokens * slots * 2, idxAt = codesAt + blockTokens * cb;
        var outp = new float[count * headDim];
        for (int t = 0; t < count; t++)
        {
            var codes = block.Slice(codesAt + t * cb, cb);
            for (int c = 0; c < headDim; c++) outp[t * headDim + c] = zero[c] + range[c] * levels[Code(codes, c, bits)];
            for (int s = 0; s < slots; s++)
            {
                int i = t * slots + s;
                int idx = Index(block, idxAt + i * ib, headDim);
                if (idx == empty) continue;
                outp[t * headDim + idx] = Half(block, 2 * i);
            }
        }
        return outp;
    }

    /// <summary>Per-token block: outlier values T*S*2 | ranges T*2 | zeros T*2 | codes T*cb | indices T*S*ib.</summary>
    public static float[] DecodeToken(ReadOnlySpan<byte> block, int blockTokens, int headDim, int bits, int slots,
        ReadOnlySpan<float> levels, int count)
    {
        int cb = (headDim * bits + 7) / 8, ib = headDim < 255 ? 1 : 2;
        int rangesAt = blockTokens * slots * 2, zerosAt = rangesAt + 2 * blockTokens, codesAt = zerosAt + 2 * blockTokens;
        int idxAt = codesAt + blockTokens * cb;
        var outp = new float[count * headDim];
        for (int t = 0; t < count; t++)
        {
            float range = Half(block, rangesAt + 2 * t), zero = Half(block, zerosAt + 2 * t);
            var codes = block.Slice(codesAt + t * cb, cb);
            for (int c = 0; c < headDim; c++) outp[t * headDim + c] = zero + range * levels[Code(codes, c, bits)];
            for (int s = 0; s < slots; s++)
            {
                int i = t * slots + s;
                outp[t * headDim + Index(block, idxAt + i * ib, headDim)] = Half(block, 2 * i);
            }
        }
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
