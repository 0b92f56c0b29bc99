using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// Fused attention kernels for the KVQuant codecs (AVX-512 + VBMI; <see cref="NuqLanes"/> says how codes reach
/// registers). Keys: decode a token's codes through the per-layer codebook (vpermps) and the per-channel scale/zero
/// (one FMA), put its exact outliers in by lane blends, rotate it at its position in registers (angles from
/// <see cref="RopeAngleTable"/>: 4 multiplies per pair, no cos/sin), and dot it with the group's query rows, so no
/// tile is written. Values: acc += w_j * (cb[code] * range_j + zero_j) with each token's 16-entry table
/// zero_j + range_j * cb built once per block, accumulator rows in registers across the block's tokens, and the
/// token's exact outliers added afterwards as sparse corrections w_j * (x - decoded). With more query rows than the
/// register kernels take (prefill), blocks are decoded once into a tile by the same vector decode and the dense
/// <see cref="Attention.TileMath"/> kernels serve all rows.
/// Every kernel is checked against the codec's DecodeBlock + Rope.RotateAt + TileMath path in the tests.
/// </summary>
internal static unsafe class NuqKernels
{
    /// <summary>Most query rows the fused key kernel serves; above it the block goes through a decoded tile.</summary>
    public const int MaxFusedRows = 8;

    [ThreadStatic] private static float[]? _qLanes;

    private static float[] QBuffer(int floats)
    {
        var b = _qLanes;
        if (b == null || b.Length < floats) _qLanes = b = new float[Math.Max(floats, 4096)];
        return b;
    }

    /// <summary>Decodes (and optionally rotates) key tokens of a block in lane order, one row at a time, calling
    /// <paramref name="sink"/>.Row with the decoded row held in <paramref name="buf"/> (Vectors registers' worth).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DecodeKeyRow(NuqLanes lanes, byte* block, int blockBytes, int codesOffset, int codeBytes,
        int slots, int valuesOffset, int indicesOffset, int empty, Vector512<float> lut, float* zero, float* range,
        int t, Vector512<float>* buf)
    {
        int nv = lanes.Vectors;
        var row = lanes.LoadRow(block, blockBytes, codesOffset + t * codeBytes);
        for (int v = 0; v < nv; v++)
        {
            var idx = NuqLanes.Codes(row, lanes.Control[v], lanes.Shift[v]);
            buf[v] = Vector512.FusedMultiplyAdd(Avx512F.PermuteVar16x32(lut, idx), Vector512.Load(range + 16 * v), Vector512.Load(zero + 16 * v));
        }
        // Exact outliers replace their channel's lane (slots are filled from the first; the first empty one ends them).
        for (int s = 0; s < slots; s++)
        {
            int i = t * slots + s;
            int c = block[indicesOffset + i];
            if (c == empty) break;
            float x = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(block + valuesOffset + 2 * i));
            int v = lanes.VectorOf[c];
            var m = Vector512.Equals(lanes.Channel[v], Vector512.Create(c));
            buf[v] = Vector512.ConditionalSelect(m.AsSingle(), Vector512.Create(x), buf[v]);
        }
    }

    /// <summary>Rotates a decoded key (RoPE lane order) at position p in registers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RotateRow(Vector512<float>* buf, int pairVectors, int pairs, float* baseCos, float* baseSin,
        float* deltaCos, float* deltaSin, int p)
    {
        int b = (p / RopeAngleTable.Step) * pairs, d = (p % RopeAngleTable.Step) * pairs;
        for (int m = 0; m < pairVectors; m++)
        {
            var cb = Vector512.Load(baseCos + b + 16 * m);
            var sb = Vector512.Load(baseSin + b + 16 * m);
            var cd = Vector512.Load(deltaCos + d + 16 * m);
            var sd = Vector512.Load(deltaSin + d + 16 * m);
            var cos = Vector512.FusedMultiplyAdd(cb, cd, -(sb * sd));
            var sin = Vector512.FusedMultiplyAdd(sb, cd, cb * sd);
            var f = buf[2 * m];
            var g = buf[2 * m + 1];
            buf[2 * m] = Vector512.FusedMultiplyAdd(f, cos, -(g * sin));
            buf[2 * m + 1] = Vector512.FusedMultiplyAdd(f, sin, g * cos);
        }
    }

    /// <summary>scores[i, j] = q_i . R(positions[j]) k_j (or q_i . k_j when <paramref name="positions"/> is empty: keys
    /// stored after RoPE) for a block of per-channel keys.</summary>
    public static void KeyScores(NuqLanes lanes, ReadOnlySpan<byte> blockSpan, int count, ReadOnlySpan<int> positions, Rope? rope,
        int codesOffset, int codeBytes, int slots, int valuesOffset, int indicesOffset, int empty,
        Vector512<float> lut, float[] zeroLanes, float[] rangeLanes, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        int d = lanes.HeadDim, nv = lanes.Vectors;
        bool rotate = !positions.IsEmpty;
        float[] baseCos = [], baseSin = [];
        RopeAngleTable? table = null;
        if (rotate)
        {
            table = rope!.Table;
            int maxPos = 0;
            for (int j = 0; j < count; j++) maxPos = Math.Max(maxPos, positions[j]);
            (baseCos, baseSin) = table.Bases(maxPos);
        }
        var qBuf = QBuffer(nq * d);
        var buf = stackalloc Vector512<float>[nv];
        fixed (byte* block = blockSpan)
        fixed (float* pq = q, ps = scores, pt = tile, ql = qBuf, z = zeroLanes, r = rangeLanes)
        fixed (float* bc = baseCos, bs = baseSin, dc = table == null ? default : table.DeltaCos, ds = table == null ? default : table.DeltaSin)
        fixed (int* pos = positions)
        {
            lanes.Gather(pq, nq, ql);
            bool fused = nq <= MaxFusedRows;
            int pairs = table?.Pairs ?? 0;
            for (int j = 0; j < count; j++)
            {
                DecodeKeyRow(lanes, block, blockSpan.Length, codesOffset, codeBytes, slots, valuesOffset, indicesOffset, empty, lut, z, r, j, buf);
                if (rotate) RotateRow(buf, nv / 2, pairs, bc, bs, dc, ds, pos[j]);
                if (fused)
                {
                    for (int i = 0; i < nq; i++)
                    {
                        float* qi = ql + i * d;
                        var a = Vector512.Load(qi) * buf[0];
                        for (int v = 1; v < nv; v++) a = Vector512.FusedMultiplyAdd(Vector512.Load(qi + 16 * v), buf[v], a);
                        ps[i * count + j] = Vector512.Sum(a);
                    }
                }
                else for (int v = 0; v < nv; v++) buf[v].Store(pt + j * d + 16 * v);
            }
            if (!fused) Attention.TileMath.Scores(tile[..(count * d)], count, d, new ReadOnlySpan<float>(ql, nq * d), nq, scores);
        }
    }

    private interface IRows { static abstract int N { get; } }
    private struct Rows1 : IRows { public static int N => 1; }
    private struct Rows2 : IRows { public static int N => 2; }
    private struct Rows3 : IRows { public static int N => 3; }
    private struct Rows4 : IRows { public static int N => 4; }

    /// <summary>acc[i, :] += sum_j w[i, j] v_j for a block of per-token values (channel lane order).</summary>
    public static void ValueAccumulate(NuqLanes lanes, ReadOnlySpan<byte> blockSpan, int count, int rangesOffset, int zerosOffset,
        int codesOffset, int codeBytes, int slots, int valuesOffset, int indicesOffset, Vector512<float> levels,
        ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile)
    {
        int d = lanes.HeadDim;
        var luts = stackalloc Vector512<float>[count];
        fixed (byte* block = blockSpan)
        fixed (float* pw = w, pa = acc, pt = tile)
        {
            // Each token's table: zero_j + range_j * level (16 lanes).
            for (int j = 0; j < count; j++)
            {
                float range = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(block + rangesOffset + 2 * j));
                float zero = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(block + zerosOffset + 2 * j));
                luts[j] = Vector512.FusedMultiplyAdd(levels, Vector512.Create(range), Vector512.Create(zero));
            }
            if (nq > 4)
            {
                DecodeValues(lanes, block, blockSpan.Length, count, codesOffset, codeBytes, luts, pt);
                ApplyValueOutliers(block, count, slots, valuesOffset, indicesOffset, d, pt);
                Attention.TileMath.Accumulate(tile[..(count * d)], count, d, w, nq, acc);
                return;
            }
            switch (nq)
            {
                case 1: Accumulate<Rows1>(lanes, block, blockSpan.Length, count, codesOffset, codeBytes, luts, pw, pa); break;
                case 2: Accumulate<Rows2>(lanes, block, blockSpan.Length, count, codesOffset, codeBytes, luts, pw, pa); break;
                case 3: Accumulate<Rows3>(lanes, block, blockSpan.Length, count, codesOffset, codeBytes, luts, pw, pa); break;
                default: Accumulate<Rows4>(lanes, block, blockSpan.Length, count, codesOffset, codeBytes, luts, pw, pa); break;
            }
            // Exact outliers: acc += w * (x - decoded) at their channels (2k per token, scalar).
            int bits = lanes.Bits, mask = (1 << bits) - 1;
            for (int j = 0; j < count; j++)
            {
                byte* codes = block + codesOffset + j * codeBytes;
                float* lut = (float*)&luts[j];
                for (int s = 0; s < slots; s++)
                {
                    int i = j * slots + s;
                    int c = block[indicesOffset + i];
                    if (c == 0xFF) continue;   // an empty slot (the value codec fills all of them today)
                    float x = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(block + valuesOffset + 2 * i));
                    int bit = c * bits;
                    int code = (Unsafe.ReadUnaligned<ushort>(codes + (bit >> 3)) >> (bit & 7)) & mask;
                    float delta = x - lut[code];
                    for (int r = 0; r < nq; r++) pa[r * d + c] += pw[r * count + j] * delta;
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate<TRows>(NuqLanes lanes, byte* block, int blockBytes, int count, int codesOffset, int codeBytes,
        Vector512<float>* luts, float* w, float* acc) where TRows : struct, IRows
    {
        int d = lanes.HeadDim;
        for (int v = 0; v < lanes.Vectors; v++)
        {
            var ctrl = lanes.Control[v];
            var shift = lanes.Shift[v];
            var a0 = Vector512.Load(acc + 16 * v);
            var a1 = TRows.N > 1 ? Vector512.Load(acc + d + 16 * v) : default;
            var a2 = TRows.N > 2 ? Vector512.Load(acc + 2 * d + 16 * v) : default;
            var a3 = TRows.N > 3 ? Vector512.Load(acc + 3 * d + 16 * v) : default;
            for (int j = 0; j < count; j++)
            {
                var row = lanes.LoadRow(block, blockBytes, codesOffset + j * codeBytes);
                var x = Avx512F.PermuteVar16x32(luts[j], NuqLanes.Codes(row, ctrl, shift));
                a0 = Vector512.FusedMultiplyAdd(x, Vector512.Create(w[j]), a0);
                if (TRows.N > 1) a1 = Vector512.FusedMultiplyAdd(x, Vector512.Create(w[count + j]), a1);
                if (TRows.N > 2) a2 = Vector512.FusedMultiplyAdd(x, Vector512.Create(w[2 * count + j]), a2);
                if (TRows.N > 3) a3 = Vector512.FusedMultiplyAdd(x, Vector512.Create(w[3 * count + j]), a3);
            }
            a0.Store(acc + 16 * v);
            if (TRows.N > 1) a1.Store(acc + d + 16 * v);
            if (TRows.N > 2) a2.Store(acc + 2 * d + 16 * v);
            if (TRows.N > 3) a3.Store(acc + 3 * d + 16 * v);
        }
    }

    /// <summary>Per-token values of a block decoded into a (count, HeadDim) tile, outliers not yet applied.</summary>
    private static void DecodeValues(NuqLanes lanes, byte* block, int blockBytes, int count, int codesOffset, int codeBytes,
        Vector512<float>* luts, float* dst)
    {
        int d = lanes.HeadDim;
        for (int j = 0; j < count; j++)
        {
            var row = lanes.LoadRow(block, blockBytes, codesOffset + j * codeBytes);
            for (int v = 0; v < lanes.Vectors; v++)
                Avx512F.PermuteVar16x32(luts[j], NuqLanes.Codes(row, lanes.Control[v], lanes.Shift[v])).Store(dst + j * d + 16 * v);
        }
    }

    private static void ApplyValueOutliers(byte* block, int count, int slots, int valuesOffset, int indicesOffset, int d, float* dst)
    {
        for (int j = 0; j < count; j++)
            for (int s = 0; s < slots; s++)
            {
                int i = j * slots + s, c = block[indicesOffset + i];
                if (c == 0xFF) continue;
                dst[j * d + c] = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(block + valuesOffset + 2 * i));
            }
    }

    /// <summary>A block of per-token values decoded into a tile (DecodeBlock's fast path).</summary>
    public static void DecodeValueBlock(NuqLanes lanes, ReadOnlySpan<byte> blockSpan, int count, int rangesOffset, int zerosOffset,
        int codesOffset, int codeBytes, int slots, int valuesOffset, int indicesOffset, Vector512<float> levels, Span<float> dst)
    {
        var luts = stackalloc Vector512<float>[count];
        fixed (byte* block = blockSpan)
        fixed (float* pd = dst)
        {
            for (int j = 0; j < count; j++)
            {
                float range = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(block + rangesOffset + 2 * j));
                float zero = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(block + zerosOffset + 2 * j));
                luts[j] = Vector512.FusedMultiplyAdd(levels, Vector512.Create(range), Vector512.Create(zero));
            }
            DecodeValues(lanes, block, blockSpan.Length, count, codesOffset, codeBytes, luts, pd);
            ApplyValueOutliers(block, count, slots, valuesOffset, indicesOffset, lanes.HeadDim, pd);
        }
    }
}
