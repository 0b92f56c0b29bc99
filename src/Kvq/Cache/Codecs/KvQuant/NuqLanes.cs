using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kvq.Tensors;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// Where each channel of a token's packed B-bit codes goes in 16-lane registers, and how to get it there: one byte
/// permute (vpermb) brings the byte(s) holding each lane's code into that lane, a per-lane variable shift aligns the
/// code, and a 16-entry float permute (vpermps) looks it up in the codebook. vpermps reads only the low 4 index bits,
/// so codebooks of 2^B &lt; 16 levels are repeated across the register and the bits above the code need no mask.
/// The lane order is free: keys use RoPE order (vector 2m = first elements of pairs 16m..16m+15, vector 2m+1 = their
/// second elements), so rotating a decoded key is elementwise between two registers with no shuffles; values use
/// channel order. Queries are gathered into the same lane order once per call (a dot product does not care).
/// </summary>
internal sealed class NuqLanes
{
    public readonly int HeadDim, Bits, Vectors, CodeBytes;
    /// <summary>Bytes loaded per token row: 32 or 64 (covers <see cref="CodeBytes"/>).</summary>
    public readonly int LoadBytes;
    public readonly Vector512<byte>[] Control;   // per vector: vpermb control
    public readonly Vector512<uint>[] Shift;     // per vector: right shift of each lane
    public readonly Vector512<int>[] Channel;    // per vector: the channel of each lane (outlier blends)
    public readonly int[] LaneChannel;           // lane (v*16+l) -> channel
    public readonly int[] VectorOf;              // channel -> vector index
    public readonly byte[] LaneOf;               // channel -> lane (v*16+l)
    /// <summary>4-bit codes whose lanes pair up with the bytes: vector 2m lane l holds the low nibble of byte 16m + l
    /// (channel 32m + 2l) and vector 2m + 1 its high nibble (channel 32m + 2l + 1), as in RoPE order of normal-style
    /// pairs. Then a vector pair's codes are one zero-extending load of 16 bytes (vpmovzxbd) and that shifted right by
    /// 4 (<see cref="PairedNibbleCodes"/>), instead of a byte permute and a variable shift per vector.</summary>
    public readonly bool PairedNibbles;

    public static bool IsSupported(int headDim, int bits) =>
        Avx512F.IsSupported && Avx512Vbmi.IsSupported && Vector512.IsHardwareAccelerated
        && headDim % 32 == 0 && headDim < 255 && bits is 2 or 3 or 4 && NuqBits.Bytes(headDim, bits) <= 64;

    private NuqLanes(int headDim, int bits, int[] laneChannel)
    {
        HeadDim = headDim;
        Bits = bits;
        Vectors = headDim / 16;
        CodeBytes = NuqBits.Bytes(headDim, bits);
        LoadBytes = CodeBytes <= 32 ? 32 : 64;
        LaneChannel = laneChannel;
        VectorOf = new int[headDim];
        LaneOf = new byte[headDim];
        for (int k = 0; k < headDim; k++) LaneOf[laneChannel[k]] = (byte)k;
        Control = new Vector512<byte>[Vectors];
        Shift = new Vector512<uint>[Vectors];
        Channel = new Vector512<int>[Vectors];
        Span<byte> ctrl = stackalloc byte[64];
        Span<uint> shift = stackalloc uint[16];
        Span<int> chan = stackalloc int[16];
        for (int v = 0; v < Vectors; v++)
        {
            for (int l = 0; l < 16; l++)
            {
                int c = laneChannel[v * 16 + l], bit = c * bits, b = bit >> 3;
                VectorOf[c] = v;
                chan[l] = c;
                shift[l] = (uint)(bit & 7);
                // Two bytes cover any code of up to 4 bits at a shift of up to 7; the upper two are don't-cares.
                ctrl[4 * l] = (byte)b;
                ctrl[4 * l + 1] = (byte)Math.Min(b + 1, 63);
                ctrl[4 * l + 2] = ctrl[4 * l + 3] = (byte)b;
            }
            Control[v] = Vector512.Create((ReadOnlySpan<byte>)ctrl);
            Shift[v] = Vector512.Create((ReadOnlySpan<uint>)shift);
            Channel[v] = Vector512.Create((ReadOnlySpan<int>)chan);
        }
        (_gatherA, _gatherB, _gatherControl) = GatherPlan(laneChannel, Vectors);
        if (headDim == 64) _gather64 = new Gather64Plan(_gatherA, _gatherB, _gatherControl);
        PairedNibbles = bits == 4 && Vectors % 2 == 0;
        for (int k = 0; k < headDim && PairedNibbles; k++)
        {
            int v = k / 16, l = k % 16;
            PairedNibbles = laneChannel[k] == 32 * (v / 2) + 2 * l + (v % 2);
        }
    }

    /// <summary>Codes of vectors 2m and 2m + 1 of a token row when <see cref="PairedNibbles"/>: the 16 bytes at
    /// <paramref name="bytes"/> zero-extended to lanes (vpmovzxbd; the permute of the codebook reads the low 4 bits)
    /// and the same shifted right by 4.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe void PairedNibbleCodes(byte* bytes, out Vector512<int> low, out Vector512<int> high)
    {
        low = Avx512F.ConvertToVector512Int32(Vector128.Load(bytes));
        high = Avx512F.ShiftRightLogical(low, 4);
    }

    /// <summary>Channel order: vector v holds channels 16v..16v+15.</summary>
    public static NuqLanes Natural(int headDim, int bits)
    {
        var map = new int[headDim];
        for (int c = 0; c < headDim; c++) map[c] = c;
        return new NuqLanes(headDim, bits, map);
    }

    /// <summary>RoPE order for full-width rotation: vector 2m lane l = first element of pair 16m + l, vector 2m+1
    /// lane l = its second element (pairs (2i, 2i+1) for normal RoPE, (i, i + d/2) for NeoX).</summary>
    public static NuqLanes RopeOrder(int headDim, int bits, RopeStyle style)
    {
        var map = new int[headDim];
        int half = headDim / 2;
        for (int m = 0; m < headDim / 32; m++)
            for (int l = 0; l < 16; l++)
            {
                int pair = 16 * m + l;
                map[32 * m + l] = style == RopeStyle.Normal ? 2 * pair : pair;
                map[32 * m + 16 + l] = style == RopeStyle.Normal ? 2 * pair + 1 : pair + half;
            }
        return new NuqLanes(headDim, bits, map);
    }

    /// <summary>The 2^B levels repeated to 16 lanes (vpermps ignores index bits above the 4th).</summary>
    public static Vector512<float> Repeat(ReadOnlySpan<float> levels)
    {
        Span<float> l16 = stackalloc float[16];
        for (int i = 0; i < 16; i++) l16[i] = levels[i % levels.Length];
        return Vector512.Create((ReadOnlySpan<float>)l16);
    }

    /// <summary>Per-channel values (zero, range) laid out in lane order.</summary>
    public float[] InLaneOrder(ReadOnlySpan<float> perChannel)
    {
        var r = new float[HeadDim];
        for (int k = 0; k < HeadDim; k++) r[k] = perChannel[LaneChannel[k]];
        return r;
    }

    /// <summary>Code indices of vector v of a token row (lanes hold the code in their low bits, garbage above).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<int> Codes(Vector512<byte> row, Vector512<byte> control, Vector512<uint> shift) =>
        Avx512F.ShiftRightLogicalVariable(Avx512Vbmi.PermuteVar64x8(row, control).AsUInt32(), shift).AsInt32();

    /// <summary>Bytes of a padded copy of count code rows.</summary>
    public int PaddedRowsBytes(int count) => count * CodeBytes + 64;

    /// <summary>Whether every row's <see cref="LoadBytes"/>-byte load stays inside the block (outlier indices follow
    /// the codes in both KVQuant layouts; without outliers the last rows would read past the block).</summary>
    public bool RowsLoadable(int blockBytes, int codesOffset, int count) => codesOffset + (count - 1) * CodeBytes + LoadBytes <= blockBytes;

    /// <summary>Copies count code rows into <paramref name="padded"/> (PaddedRowsBytes(count)) and returns it.</summary>
    public unsafe byte* CopyRows(byte* rows, int count, byte* padded)
    {
        Buffer.MemoryCopy(rows, padded, PaddedRowsBytes(count), (long)count * CodeBytes);
        return padded;
    }

    /// <summary>dst[i, k] = src[i, LaneChannel[k]] for n rows of HeadDim: one two-source permute (vpermt2ps) per
    /// lane vector, from the two 16-channel source vectors its lanes come from.</summary>
    public unsafe void Gather(float* src, int n, float* dst)
    {
        int d = HeadDim;
        if (d == 64)
        {
            // Head dim 64 (the decode kernels' case, once per block): the plan in locals, no array reads per vector.
            var g = _gather64;
            for (int i = 0; i < n; i++, src += 64, dst += 64)
            {
                Avx512F.PermuteVar16x32x2(Vector512.Load(src + g.A0), g.C0, Vector512.Load(src + g.B0)).Store(dst);
                Avx512F.PermuteVar16x32x2(Vector512.Load(src + g.A1), g.C1, Vector512.Load(src + g.B1)).Store(dst + 16);
                Avx512F.PermuteVar16x32x2(Vector512.Load(src + g.A2), g.C2, Vector512.Load(src + g.B2)).Store(dst + 32);
                Avx512F.PermuteVar16x32x2(Vector512.Load(src + g.A3), g.C3, Vector512.Load(src + g.B3)).Store(dst + 48);
            }
            return;
        }
        for (int i = 0; i < n; i++)
            for (int v = 0; v < Vectors; v++)
                Avx512F.PermuteVar16x32x2(Vector512.Load(src + i * d + 16 * _gatherA[v]), _gatherControl[v],
                    Vector512.Load(src + i * d + 16 * _gatherB[v])).Store(dst + i * d + 16 * v);
    }

    private readonly int[] _gatherA = [], _gatherB = [];

    /// <summary>The gather plan of head dim 64 as one object (source offsets in floats, permute controls).</summary>
    private sealed class Gather64Plan(int[] a, int[] b, Vector512<int>[] c)
    {
        public readonly int A0 = 16 * a[0], A1 = 16 * a[1], A2 = 16 * a[2], A3 = 16 * a[3];
        public readonly int B0 = 16 * b[0], B1 = 16 * b[1], B2 = 16 * b[2], B3 = 16 * b[3];
        public readonly Vector512<int> C0 = c[0], C1 = c[1], C2 = c[2], C3 = c[3];
    }

    private readonly Gather64Plan _gather64 = null!;
    private readonly Vector512<int>[] _gatherControl = [];

    /// <summary>For each lane vector, the (at most two) 16-channel source vectors its lanes come from.</summary>
    private static (int[] A, int[] B, Vector512<int>[] Control) GatherPlan(int[] laneChannel, int vectors)
    {
        var a = new int[vectors];
        var b = new int[vectors];
        var ctrl = new Vector512<int>[vectors];
        Span<int> idx = stackalloc int[16];
        for (int v = 0; v < vectors; v++)
        {
            a[v] = b[v] = laneChannel[v * 16] / 16;
            for (int l = 0; l < 16; l++)
            {
                int src = laneChannel[v * 16 + l] / 16;
                if (src != a[v]) b[v] = src;
            }
            for (int l = 0; l < 16; l++)
            {
                int c = laneChannel[v * 16 + l], src = c / 16;
                if (src != a[v] && src != b[v]) throw new InvalidOperationException("a lane vector draws on more than two source vectors");
                idx[l] = c % 16 + (src == a[v] ? 0 : 16);
            }
            ctrl[v] = Vector512.Create((ReadOnlySpan<int>)idx);
        }
        return (a, b, ctrl);
    }
}
