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
/// <see cref="RopeAngleTable"/>, no cos/sin; when the block's positions share one base angle, as in any sequence
/// without eviction, the base rotation goes onto the query rows once per block and each key turns by its offset
/// only), and dot it with the group's query rows, so no tile is written. Values: acc += w_j * (cb[code] * range_j + zero_j) with each token's 16-entry table
/// zero_j + range_j * cb built once per block (at head dim 64 and decode: in a register per token, from the packed
/// scale), accumulator rows in registers across the block's tokens, and the token's exact outliers (the sparse rows
/// of a block, <see cref="BlockOutliers"/>) blended in by a lane mask per token at head dim 64
/// (<see cref="BlockOutliers.ToLanes"/>), else added afterwards as sparse corrections w_j * (x - decoded) by the
/// codec. With more query rows than the
/// register kernels take (prefill), blocks are decoded once into a tile by the same vector decode and the dense
/// <see cref="Attention.TileMath"/> kernels serve all rows.
/// Every kernel is checked against the codec's DecodeBlock + Rope.RotateAt + TileMath path in the tests.
/// </summary>
// Scratch (stackalloc) is written before it is read, so it is not zeroed per call (SkipLocalsInit: zeroing the 2 KB
// of per-token tables and partial sums showed beside the value kernel itself in a profile).
[SkipLocalsInit]
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

    /// <summary>Channel of an empty outlier slot (matches no lane).</summary>
    public const byte EmptySlot = 0xFF;

    /// <summary>scores[i, j] = q_i . R(positions[j]) k_j (or q_i . k_j when <paramref name="positions"/> is empty: keys
    /// stored after RoPE) for a block of per-channel keys. Token j's exact outliers are slots j*slots .. j*slots+slots-1
    /// of <paramref name="slotChannels"/> (channel, or <see cref="EmptySlot"/> after the last) and
    /// <paramref name="slotValues"/>; each replaces its lane of the decoded key before the rotation.</summary>
    public static void KeyScores(NuqLanes lanes, ReadOnlySpan<byte> blockSpan, int count, ReadOnlySpan<int> positions, Rope? rope,
        int codesOffset, int codeBytes, int slots, ReadOnlySpan<byte> slotChannels, ReadOnlySpan<float> slotValues,
        Vector512<float> lut, float[] zeroLanes, float[] rangeLanes, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile) =>
        KeyScores(lanes, blockSpan, count, positions, rope, codesOffset, codeBytes, slots, slotChannels, slotValues, default, default,
            lut, zeroLanes, rangeLanes, q, nq, scores, tile);

    /// <summary><see cref="KeyScores(NuqLanes, ReadOnlySpan{byte}, int, ReadOnlySpan{int}, Rope?, int, int, int, ReadOnlySpan{byte}, ReadOnlySpan{float}, Vector512{float}, float[], float[], ReadOnlySpan{float}, int, Span{float}, Span{float})"/>
    /// with the exact outliers given instead (head dim 64) as a lane mask per token and a replacement row per token
    /// (<see cref="BlockOutliers.ToLanes"/>: lane bits in <paramref name="laneMasks"/>[j], values at
    /// <paramref name="laneValues"/>[j * 64 + lane]): one masked blend per register whatever the token's count.</summary>
    public static void KeyScores(NuqLanes lanes, ReadOnlySpan<byte> blockSpan, int count, ReadOnlySpan<int> positions, Rope? rope,
        int codesOffset, int codeBytes, int slots, ReadOnlySpan<byte> slotChannels, ReadOnlySpan<float> slotValues,
        ReadOnlySpan<ulong> laneMasks, ReadOnlySpan<float> laneValues,
        Vector512<float> lut, float[] zeroLanes, float[] rangeLanes, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        if (slotChannels.Length < count * slots || slotValues.Length < count * slots)
            throw new ArgumentException($"{count} tokens x {slots} outlier slots, {slotChannels.Length} channels / {slotValues.Length} values given");
        bool masked = !laneMasks.IsEmpty;
        if (masked && (lanes.HeadDim != 64 || slots != 0 || laneMasks.Length < count || laneValues.Length < count * 64))
            throw new ArgumentException($"lane-mask outliers need head dim 64 and no slots: {lanes.HeadDim}, {slots} slots, {laneMasks.Length} masks, {laneValues.Length} values for {count} tokens");
        int d = lanes.HeadDim, nv = lanes.Vectors;
        bool rotate = !positions.IsEmpty;
        float[] baseCos = [], baseSin = [];
        RopeAngleTable? table = null;
        int sharedBase = -1;   // the one RopeAngleTable base all the block's positions share, or -1
        if (rotate)
        {
            table = rope!.Table;
            int minPos = count > 0 ? System.Numerics.Tensors.TensorPrimitives.Min(positions[..count]) : 0;
            int maxPos = count > 0 ? Math.Max(0, System.Numerics.Tensors.TensorPrimitives.Max(positions[..count])) : 0;
            (baseCos, baseSin) = table.Bases(maxPos);
            if (minPos >= 0 && minPos / RopeAngleTable.Step == maxPos / RopeAngleTable.Step)
                sharedBase = minPos / RopeAngleTable.Step;
        }
        // Query rows in lane order: on the stack for the register kernel, a per-thread buffer for the tile path.
        Span<float> qBuf = nq <= MaxFusedRows ? stackalloc float[nq * d] : QBuffer(nq * d);
        bool copy = !lanes.RowsLoadable(blockSpan.Length, codesOffset, count);
        Span<byte> padded = copy ? stackalloc byte[lanes.PaddedRowsBytes(count)] : default;
        var part = stackalloc Vector512<float>[4 * MaxFusedRows];
        fixed (byte* block = blockSpan, pad = padded, sc = slotChannels)
        fixed (float* sv = slotValues, lv = laneValues)
        fixed (ulong* lm = laneMasks)
        fixed (float* pq = q, ps = scores, pt = tile, ql = qBuf, z = zeroLanes, r = rangeLanes)
        fixed (float* bc = baseCos, bs = baseSin, dc = table == null ? default : table.DeltaCos, ds = table == null ? default : table.DeltaSin)
        fixed (int* pos = positions)
        {
            byte* rows = block + codesOffset;
            if (copy) rows = lanes.CopyRows(rows, count, pad);
            lanes.Gather(pq, nq, ql);
            // One base angle for the whole block (every block of a plain sequence: 32 positions from a multiple of
            // 32): q . R(b + d) k = (R(b)^T q) . (R(d) k), so the base rotation goes onto the nq query rows once and
            // each key turns by its offset d alone, its cos/sin read from the table as they are (no addition formula
            // per token: 4 loads and 8 multiplies fewer per cached token).
            bool deltaOnly = sharedBase >= 0;
            if (deltaOnly) RotateBack(ql, nq, d, bc + sharedBase * table!.Pairs, bs + sharedBase * table.Pairs);
            bool fused = nq <= MaxFusedRows;
            var k = new KeyRows(rows, codeBytes, sc, slots, EmptySlot, lut, z, r, rotate, deltaOnly, bc, bs, dc, ds, table?.Pairs ?? 0, pos, sv,
                masked ? lm : null, lv);
            if (d == 64)
            {
                float* so = fused ? ps : null, to = fused ? null : pt;
                if (lanes.PairedNibbles) KeyScores64<NibblesTested>(lanes, k, count, ql, nq, so, to, part);
                else KeyScores64<Tested>(lanes, k, count, ql, nq, so, to, part);
            }
            else KeyScoresAnyDim(lanes, k, count, ql, nq, fused ? ps : null, fused ? null : pt);
            if (!fused) Attention.TileMath.Scores(tile[..(count * d)], count, d, new ReadOnlySpan<float>(ql, nq * d), nq, scores);
        }
    }

    /// <summary>Which code decode and which outlier-mask build a register kernel uses (generic, so each is compiled
    /// without a branch).</summary>
    private interface IPath
    {
        static abstract bool Nibbles { get; }
        static abstract bool TestMasks { get; }
    }
    // Plain serves the fixed-slot layout's value kernel only; the sparse-row layout takes Tested / NibblesTested (session
    // 13's A/B, `--decode-profile` at 4000 tokens under load 14-17: Plain's attention +2..4% CPU, its switch removed).
    private struct Plain : IPath { public static bool Nibbles => false; public static bool TestMasks => false; }
    private struct Tested : IPath { public static bool Nibbles => false; public static bool TestMasks => true; }
    private struct NibblesTested : IPath { public static bool Nibbles => true; public static bool TestMasks => true; }

    /// <summary>Lane l of the low / high mask half's test vector: bit l / bit 16 + l (a register's 16 lanes take 16
    /// consecutive bits of the token's 64-bit mask word; a broadcast 32-bit half serves two registers).</summary>
    private static readonly Vector512<uint> TestBitLow = Vector512.Create(1u, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
    private static readonly Vector512<uint> TestBitHigh = TestBitLow << 16;

    /// <summary>The token's 4 lane-order registers with its exact outliers blended in: lane l of register r takes
    /// <paramref name="exact"/>[16r + l] where bit 16r + l of <paramref name="mask"/> is set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BlendOutliers<TPath>(ulong mask, float* exact, Vector512<uint> bl, Vector512<uint> bh, ref Vector512<float> x0,
        ref Vector512<float> x1, ref Vector512<float> x2, ref Vector512<float> x3) where TPath : struct, IPath
    {
        if (TPath.TestMasks)
        {
            // Equals(word & bit, 0) is an and and a vptestnmd into a mask register (bl, bh: TestBitLow/High, kept in
            // registers by the caller), and the blend keeps the decoded lane where the bit is clear.
            var lo = Vector512.Create((uint)mask);
            var hi = Vector512.Create((uint)(mask >> 32));
            x0 = Vector512.ConditionalSelect(Vector512.Equals(lo & bl, Vector512<uint>.Zero).AsSingle(), x0, Vector512.Load(exact));
            x1 = Vector512.ConditionalSelect(Vector512.Equals(lo & bh, Vector512<uint>.Zero).AsSingle(), x1, Vector512.Load(exact + 16));
            x2 = Vector512.ConditionalSelect(Vector512.Equals(hi & bl, Vector512<uint>.Zero).AsSingle(), x2, Vector512.Load(exact + 32));
            x3 = Vector512.ConditionalSelect(Vector512.Equals(hi & bh, Vector512<uint>.Zero).AsSingle(), x3, Vector512.Load(exact + 48));
        }
        else
        {
            x0 = Vector512.ConditionalSelect(LaneBits((uint)mask), Vector512.Load(exact), x0);
            x1 = Vector512.ConditionalSelect(LaneBits((uint)mask >> 16), Vector512.Load(exact + 16), x1);
            x2 = Vector512.ConditionalSelect(LaneBits((uint)(mask >> 32)), Vector512.Load(exact + 32), x2);
            x3 = Vector512.ConditionalSelect(LaneBits((uint)(mask >> 48)), Vector512.Load(exact + 48), x3);
        }
    }

    /// <summary>The codebook indices of a head-dim-64 token row's 4 registers (lanes hold the code in their low 4 bits).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RowCodes<TPath>(byte* row, Vector512<byte> c0, Vector512<byte> c1, Vector512<byte> c2, Vector512<byte> c3,
        Vector512<uint> s0, Vector512<uint> s1, Vector512<uint> s2, Vector512<uint> s3,
        out Vector512<int> i0, out Vector512<int> i1, out Vector512<int> i2, out Vector512<int> i3) where TPath : struct, IPath
    {
        if (TPath.Nibbles)
        {
            NuqLanes.PairedNibbleCodes(row, out i0, out i1);
            NuqLanes.PairedNibbleCodes(row + 16, out i2, out i3);
        }
        else
        {
            var r = Vector256.Load(row).ToVector512Unsafe();
            i0 = NuqLanes.Codes(r, c0, s0); i1 = NuqLanes.Codes(r, c1, s1);
            i2 = NuqLanes.Codes(r, c2, s2); i3 = NuqLanes.Codes(r, c3, s3);
        }
    }

    /// <summary>Rows q (n, d, lane order) := R(b)^T q: each pair (x, y) of the rows turned back by the base angle whose
    /// cos/sin start at <paramref name="cos"/>/<paramref name="sin"/> (pairs in lane order: vectors 2m and 2m + 1
    /// hold pairs 16m..16m+15).</summary>
    private static void RotateBack(float* q, int n, int d, float* cos, float* sin)
    {
        for (int i = 0; i < n; i++, q += d)
            for (int m = 0; m < d / 32; m++)
            {
                var c = Vector512.Load(cos + 16 * m);
                var s = Vector512.Load(sin + 16 * m);
                var x = Vector512.Load(q + 32 * m);
                var y = Vector512.Load(q + 32 * m + 16);
                Vector512.FusedMultiplyAdd(x, c, y * s).Store(q + 32 * m);
                Avx512F.FusedMultiplySubtract(y, c, x * s).Store(q + 32 * m + 16);
            }
    }

    /// <summary>What the key kernels read: code rows, outlier slots, per-channel scale/zero in lane order, angles
    /// (with <c>deltaOnly</c> the keys turn by their offset from the block's base only).</summary>
    private readonly struct KeyRows(byte* rows, int codeBytes, byte* indices, int slots, int empty,
        Vector512<float> lut, float* zero, float* range, bool rotate, bool deltaOnly, float* baseCos, float* baseSin, float* deltaCos,
        float* deltaSin, int pairs, int* positions, float* outlierValues, ulong* laneMasks, float* laneValues)
    {
        public readonly float* OutlierValues = outlierValues;
        /// <summary>Per token a mask of lanes holding exact outliers (null: slots are used), values at j * 64 + lane.</summary>
        public readonly ulong* LaneMasks = laneMasks;
        public readonly float* LaneValues = laneValues;
        public readonly byte* Rows = rows, Indices = indices;
        public readonly int CodeBytes = codeBytes, Slots = slots, Empty = empty, Pairs = pairs;
        public readonly Vector512<float> Lut = lut;
        public readonly float* Zero = zero, Range = range, BaseCos = baseCos, BaseSin = baseSin, DeltaCos = deltaCos, DeltaSin = deltaSin;
        public readonly bool Rotate = rotate, DeltaOnly = deltaOnly;
        public readonly int* Positions = positions;
    }

    /// <summary>Head dim 64 (books-19m): the decoded key lives in four registers from codes to dots; the group's dot
    /// vectors of 4 tokens are reduced together (<see cref="Attention.TileMath.Sum4"/>: ~3.5 instructions per score instead of the ~24
    /// of Vector512.Sum, which adds 128-bit lanes separately). With <paramref name="scores"/> null, rows go to
    /// <paramref name="tile"/> instead (lane order) for the dense tile kernel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KeyScores64<TPath>(NuqLanes lanes, in KeyRows k, int count, float* q, int nq, float* scores, float* tile, Vector512<float>* part)
        where TPath : struct, IPath
    {
        var c0 = lanes.Control[0]; var c1 = lanes.Control[1]; var c2 = lanes.Control[2]; var c3 = lanes.Control[3];
        var s0 = lanes.Shift[0]; var s1 = lanes.Shift[1]; var s2 = lanes.Shift[2]; var s3 = lanes.Shift[3];
        var z0 = Vector512.Load(k.Zero); var z1 = Vector512.Load(k.Zero + 16); var z2 = Vector512.Load(k.Zero + 32); var z3 = Vector512.Load(k.Zero + 48);
        var r0 = Vector512.Load(k.Range); var r1 = Vector512.Load(k.Range + 16); var r2 = Vector512.Load(k.Range + 32); var r3 = Vector512.Load(k.Range + 48);
        var lut = k.Lut;
        byte* rows = k.Rows;
        int cb = k.CodeBytes, slots = k.Slots, empty = k.Empty, pairs = k.Pairs;
        var ch0 = lanes.Channel[0]; var ch1 = lanes.Channel[1]; var ch2 = lanes.Channel[2]; var ch3 = lanes.Channel[3];
        var bl = TestBitLow; var bh = TestBitHigh;
        for (int j0 = 0; j0 < count; j0 += 4)
        {
            int n4 = Math.Min(4, count - j0);
            for (int t = 0; t < n4; t++)
            {
                int j = j0 + t;
                RowCodes<TPath>(rows + j * cb, c0, c1, c2, c3, s0, s1, s2, s3, out var i0, out var i1, out var i2, out var i3);
                var k0 = Vector512.FusedMultiplyAdd(Avx512F.PermuteVar16x32(lut, i0), r0, z0);
                var k1 = Vector512.FusedMultiplyAdd(Avx512F.PermuteVar16x32(lut, i1), r1, z1);
                var k2 = Vector512.FusedMultiplyAdd(Avx512F.PermuteVar16x32(lut, i2), r2, z2);
                var k3 = Vector512.FusedMultiplyAdd(Avx512F.PermuteVar16x32(lut, i3), r3, z3);
                // Exact outliers replace their lane. The first slot is blended unconditionally (an empty slot's index
                // matches no channel): whether a token has an outlier at all is data-dependent (about half of them at
                // 1%), and a branch on it mispredicted more than the blend costs. Slots fill from the first, and a
                // second outlier is rare, so the rest sit behind one mostly-not-taken branch.
                if (k.LaneMasks != null)
                {
                    // A token's outliers, however many, by one masked blend per register (no branch on the count:
                    // real blocks hold ~1.4 per token, unevenly, so per-slot blends and branches cost more).
                    BlendOutliers<TPath>(k.LaneMasks[j], k.LaneValues + j * 64, bl, bh, ref k0, ref k1, ref k2, ref k3);
                }
                byte* idx = k.Indices + j * slots;
                float* ov = k.OutlierValues + j * slots;
                if (slots > 0)
                {
                    var vc = Vector512.Create((int)idx[0]);
                    var vx = Vector512.Create(ov[0]);
                    k0 = Vector512.ConditionalSelect(Vector512.Equals(ch0, vc).AsSingle(), vx, k0);
                    k1 = Vector512.ConditionalSelect(Vector512.Equals(ch1, vc).AsSingle(), vx, k1);
                    k2 = Vector512.ConditionalSelect(Vector512.Equals(ch2, vc).AsSingle(), vx, k2);
                    k3 = Vector512.ConditionalSelect(Vector512.Equals(ch3, vc).AsSingle(), vx, k3);
                    if (slots > 1 && idx[1] != empty)
                        for (int s = 1; s < slots && idx[s] != empty; s++)
                        {
                            vc = Vector512.Create((int)idx[s]);
                            vx = Vector512.Create(ov[s]);
                            k0 = Vector512.ConditionalSelect(Vector512.Equals(ch0, vc).AsSingle(), vx, k0);
                            k1 = Vector512.ConditionalSelect(Vector512.Equals(ch1, vc).AsSingle(), vx, k1);
                            k2 = Vector512.ConditionalSelect(Vector512.Equals(ch2, vc).AsSingle(), vx, k2);
                            k3 = Vector512.ConditionalSelect(Vector512.Equals(ch3, vc).AsSingle(), vx, k3);
                        }
                }
                if (k.DeltaOnly)
                {
                    int dO = (int)((uint)k.Positions[j] % RopeAngleTable.Step) * pairs;
                    float* dc = k.DeltaCos + dO, ds = k.DeltaSin + dO;
                    var cos = Vector512.Load(dc);
                    var sin = Vector512.Load(ds);
                    var f = k0;
                    k0 = Avx512F.FusedMultiplySubtract(f, cos, k1 * sin);
                    k1 = Vector512.FusedMultiplyAdd(f, sin, k1 * cos);
                    cos = Vector512.Load(dc + 16);
                    sin = Vector512.Load(ds + 16);
                    f = k2;
                    k2 = Avx512F.FusedMultiplySubtract(f, cos, k3 * sin);
                    k3 = Vector512.FusedMultiplyAdd(f, sin, k3 * cos);
                }
                else if (k.Rotate)
                {
                    uint p = (uint)k.Positions[j];
                    int bo = (int)(p / RopeAngleTable.Step) * pairs, dO = (int)(p % RopeAngleTable.Step) * pairs;
                    float* bc = k.BaseCos + bo, bs = k.BaseSin + bo, dc = k.DeltaCos + dO, ds = k.DeltaSin + dO;
                    var cbv = Vector512.Load(bc); var sbv = Vector512.Load(bs); var cdv = Vector512.Load(dc); var sdv = Vector512.Load(ds);
                    var cos = Avx512F.FusedMultiplySubtract(cbv, cdv, sbv * sdv);
                    var sin = Vector512.FusedMultiplyAdd(sbv, cdv, cbv * sdv);
                    var f = k0;
                    k0 = Avx512F.FusedMultiplySubtract(f, cos, k1 * sin);
                    k1 = Vector512.FusedMultiplyAdd(f, sin, k1 * cos);
                    cbv = Vector512.Load(bc + 16); sbv = Vector512.Load(bs + 16); cdv = Vector512.Load(dc + 16); sdv = Vector512.Load(ds + 16);
                    cos = Avx512F.FusedMultiplySubtract(cbv, cdv, sbv * sdv);
                    sin = Vector512.FusedMultiplyAdd(sbv, cdv, cbv * sdv);
                    f = k2;
                    k2 = Avx512F.FusedMultiplySubtract(f, cos, k3 * sin);
                    k3 = Vector512.FusedMultiplyAdd(f, sin, k3 * cos);
                }
                if (scores == null)
                {
                    float* o = tile + j * 64;
                    k0.Store(o); k1.Store(o + 16); k2.Store(o + 32); k3.Store(o + 48);
                    continue;
                }
                for (int i = 0; i < nq; i++)
                {
                    float* qi = q + i * 64;
                    var a = Vector512.Load(qi) * k0;
                    a = Vector512.FusedMultiplyAdd(Vector512.Load(qi + 16), k1, a);
                    a = Vector512.FusedMultiplyAdd(Vector512.Load(qi + 32), k2, a);
                    part[i * 4 + t] = Vector512.FusedMultiplyAdd(Vector512.Load(qi + 48), k3, a);
                }
            }
            if (scores == null) continue;
            for (int i = 0; i < nq; i++)
            {
                var s4 = Attention.TileMath.Sum4(part[i * 4], part[i * 4 + 1], part[i * 4 + 2], part[i * 4 + 3]);
                if (n4 == 4) s4.Store(scores + i * count + j0);
                else for (int t = 0; t < n4; t++) scores[i * count + j0 + t] = s4.GetElement(t);
            }
        }
    }

    private static readonly Vector512<uint> LaneBit = Vector512.Create(1u, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768);

    /// <summary>All-ones in lane l where bit l of <paramref name="bits"/> (low 16) is set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> LaneBits(uint bits)
    {
        var b = LaneBit;
        return Vector512.Equals(Vector512.Create(bits) & b, b).AsSingle();
    }

    /// <summary>Any head dim the lanes take (multiple of 32, up to 128): the decoded key goes through a small buffer.</summary>
    private static void KeyScoresAnyDim(NuqLanes lanes, in KeyRows k, int count, float* q, int nq, float* scores, float* tile)
    {
        int d = lanes.HeadDim, nv = lanes.Vectors;
        var buf = stackalloc Vector512<float>[nv];
        for (int j = 0; j < count; j++)
        {
            var row = lanes.LoadBytes == 32 ? Vector256.Load(k.Rows + j * k.CodeBytes).ToVector512Unsafe() : Vector512.Load(k.Rows + j * k.CodeBytes);
            for (int v = 0; v < nv; v++)
            {
                var idx = NuqLanes.Codes(row, lanes.Control[v], lanes.Shift[v]);
                buf[v] = Vector512.FusedMultiplyAdd(Avx512F.PermuteVar16x32(k.Lut, idx), Vector512.Load(k.Range + 16 * v), Vector512.Load(k.Zero + 16 * v));
            }
            for (int s = 0; s < k.Slots; s++)
            {
                int i = j * k.Slots + s;
                int c = k.Indices[i];
                if (c == k.Empty) break;
                float x = k.OutlierValues[i];
                int v = lanes.VectorOf[c];
                buf[v] = Vector512.ConditionalSelect(Vector512.Equals(lanes.Channel[v], Vector512.Create(c)).AsSingle(), Vector512.Create(x), buf[v]);
            }
            if (k.Rotate)
            {
                int p = k.Positions[j], b = (p / RopeAngleTable.Step) * k.Pairs, dd = (p % RopeAngleTable.Step) * k.Pairs;
                for (int m = 0; m < nv / 2; m++)
                {
                    var cdv = Vector512.Load(k.DeltaCos + dd + 16 * m); var sdv = Vector512.Load(k.DeltaSin + dd + 16 * m);
                    Vector512<float> cos = cdv, sin = sdv;
                    if (!k.DeltaOnly)
                    {
                        var cbv = Vector512.Load(k.BaseCos + b + 16 * m); var sbv = Vector512.Load(k.BaseSin + b + 16 * m);
                        cos = Avx512F.FusedMultiplySubtract(cbv, cdv, sbv * sdv);
                        sin = Vector512.FusedMultiplyAdd(sbv, cdv, cbv * sdv);
                    }
                    var f = buf[2 * m];
                    var g = buf[2 * m + 1];
                    buf[2 * m] = Vector512.FusedMultiplyAdd(f, cos, -(g * sin));
                    buf[2 * m + 1] = Vector512.FusedMultiplyAdd(f, sin, g * cos);
                }
            }
            if (scores == null)
            {
                for (int v = 0; v < nv; v++) buf[v].Store(tile + j * d + 16 * v);
                continue;
            }
            for (int i = 0; i < nq; i++)
            {
                float* qi = q + i * d;
                var a = Vector512.Load(qi) * buf[0];
                for (int v = 1; v < nv; v++) a = Vector512.FusedMultiplyAdd(Vector512.Load(qi + 16 * v), buf[v], a);
                scores[i * count + j] = Vector512.Sum(a);
            }
        }
    }

    private interface IRows { static abstract int N { get; } }
    private struct Rows1 : IRows { public static int N => 1; }
    private struct Rows2 : IRows { public static int N => 2; }
    private struct Rows3 : IRows { public static int N => 3; }
    private struct Rows4 : IRows { public static int N => 4; }

    /// <summary>acc[i, :] += sum_j w[i, j] v_j for a block of per-token values (channel lane order).</summary>
    /// <paramref name="scales"/>: per token its decoded zero then range (2 * count floats).
    public static void ValueAccumulate(NuqLanes lanes, ReadOnlySpan<byte> blockSpan, int count, ReadOnlySpan<float> scales,
        int codesOffset, int codeBytes, int slots, int valuesOffset, int indicesOffset, Vector512<float> levels,
        ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile) =>
        ValueAccumulate(lanes, blockSpan, count, scales, codesOffset, codeBytes, slots, valuesOffset, indicesOffset, default, default,
            levels, w, nq, acc, tile);

    /// <summary>The same, with the block's exact outliers (head dim 64) as a lane mask and replacement row per token
    /// (<see cref="BlockOutliers.ToLanes"/>), blended into each token's decoded registers (or into the decoded tile
    /// above 4 rows).</summary>
    public static void ValueAccumulate(NuqLanes lanes, ReadOnlySpan<byte> blockSpan, int count, ReadOnlySpan<float> scales,
        int codesOffset, int codeBytes, int slots, int valuesOffset, int indicesOffset, ReadOnlySpan<ulong> laneMasks,
        ReadOnlySpan<float> laneValues, Vector512<float> levels, ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile)
    {
        int d = lanes.HeadDim;
        bool masked = !laneMasks.IsEmpty;
        if (masked && (d != 64 || slots != 0 || laneMasks.Length < count || laneValues.Length < count * 64))
            throw new ArgumentException($"lane-mask outliers need head dim 64 and no slots: {d}, {slots} slots, {laneMasks.Length} masks, {laneValues.Length} values for {count} tokens");
        var luts = stackalloc Vector512<float>[count];
        bool copy = !lanes.RowsLoadable(blockSpan.Length, codesOffset, count);
        Span<byte> padded = copy ? stackalloc byte[lanes.PaddedRowsBytes(count)] : default;
        fixed (byte* block = blockSpan, pad = padded)
        fixed (float* pw = w, pa = acc, pt = tile, zr = scales, lv = laneValues)
        fixed (ulong* lm = laneMasks)
        {
            byte* rows = block + codesOffset;
            if (copy) rows = lanes.CopyRows(rows, count, pad);
            TokenTables(zr, count, levels, luts);
            if (nq > 4)
            {
                DecodeValues(lanes, rows, count, codeBytes, luts, pt);
                ApplyValueOutliers(block, count, slots, valuesOffset, indicesOffset, d, pt);
                if (masked)
                    for (int j = 0; j < count; j++)
                        for (ulong m = lm[j]; m != 0; m &= m - 1)
                        {
                            int lane = System.Numerics.BitOperations.TrailingZeroCount(m);
                            pt[j * d + lanes.LaneChannel[lane]] = lv[j * 64 + lane];
                        }
                Attention.TileMath.Accumulate(tile[..(count * d)], count, d, w, nq, acc);
                return;
            }
            if (d == 64)
            {
                // Outliers blended into the decoded registers (every token has 2k of them: no branch).
                var ov = stackalloc float[count * slots + 16];
                OutlierFloats(block + valuesOffset, count * slots, ov);
                var o = new ValueOutliers(block + indicesOffset, ov, slots, masked ? lm : null, lv);
                switch (nq)
                {
                    case 1: Accumulate64<Rows1, Plain>(lanes, rows, count, codeBytes, luts, null, null, default, o, pw, pa); break;
                    case 2: Accumulate64<Rows2, Plain>(lanes, rows, count, codeBytes, luts, null, null, default, o, pw, pa); break;
                    case 3: Accumulate64<Rows3, Plain>(lanes, rows, count, codeBytes, luts, null, null, default, o, pw, pa); break;
                    default: Accumulate64<Rows4, Plain>(lanes, rows, count, codeBytes, luts, null, null, default, o, pw, pa); break;
                }
                return;
            }
            switch (nq)
            {
                case 1: Accumulate<Rows1>(lanes, rows, count, codeBytes, luts, pw, pa); break;
                case 2: Accumulate<Rows2>(lanes, rows, count, codeBytes, luts, pw, pa); break;
                case 3: Accumulate<Rows3>(lanes, rows, count, codeBytes, luts, pw, pa); break;
                default: Accumulate<Rows4>(lanes, rows, count, codeBytes, luts, pw, pa); break;
            }
            // Exact outliers: acc += w * (x - decoded) at their channels (2k per token, scalar).
            int bits = lanes.Bits, mask = (1 << bits) - 1;
            for (int j = 0; j < count; j++)
            {
                byte* codes = rows + j * codeBytes;
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

    /// <summary>acc[i, :] += sum_j w[i, j] v_j for a block of per-token values, head dim 64 and at most 4 query rows (decode),
    /// the tokens' packed scales (<see cref="TokenScale"/>, 2 bytes each from the block's start) decoded inside the
    /// register kernel, and the block's exact outliers, if any, as lane masks and replacement rows
    /// (<see cref="BlockOutliers.ToLanes"/>; empty spans: none).</summary>
    public static void ValueAccumulate64(NuqLanes lanes, ReadOnlySpan<byte> blockSpan, int count, int codesOffset, int codeBytes,
        ReadOnlySpan<ulong> laneMasks, ReadOnlySpan<float> laneValues, Vector512<float> levels, ReadOnlySpan<float> w, int nq, Span<float> acc)
    {
        bool masked = !laneMasks.IsEmpty;
        if (lanes.HeadDim != 64 || nq < 1 || nq > 4 || count < 1 || 2 * count > codesOffset || blockSpan.Length < codesOffset + count * codeBytes
            || w.Length < nq * count || acc.Length < nq * 64 || (masked && (laneMasks.Length < count || laneValues.Length < count * 64)))
            throw new ArgumentException($"value accumulate of {nq} rows over {count} tokens (head dim {lanes.HeadDim}) with a {blockSpan.Length}-byte " +
                $"block, codes at {codesOffset}, {w.Length} weights, {acc.Length} accumulator values, {laneMasks.Length} masks, {laneValues.Length} outlier values");
        bool copy = !lanes.RowsLoadable(blockSpan.Length, codesOffset, count);
        Span<byte> padded = copy ? stackalloc byte[lanes.PaddedRowsBytes(count)] : default;
        fixed (byte* block = blockSpan, pad = padded)
        fixed (float* pw = w, pa = acc, lv = laneValues, rt = TokenScale.RangeTable)
        fixed (ulong* lm = laneMasks)
        {
            byte* rows = block + codesOffset;
            if (copy) rows = lanes.CopyRows(rows, count, pad);
            var o = new ValueOutliers(null, null, 0, masked ? lm : null, lv);
            // Values stay in channel order (no paired-nibble lanes): gathering the accumulators into that order and
            // back per block cost more than the cheaper code loads saved (session 12, `--quick`: +2.6% on nuq4-1%).
            Accumulate64<Tested>(lanes, rows, count, codeBytes, block, rt, levels, o, pw, nq, pa);
        }
    }

    private static void Accumulate64<TPath>(NuqLanes lanes, byte* rows, int count, int codeBytes, byte* packedScales, float* rangeTable,
        Vector512<float> levels, in ValueOutliers o, float* w, int nq, float* acc) where TPath : struct, IPath
    {
        switch (nq)
        {
            case 1: Accumulate64<Rows1, TPath>(lanes, rows, count, codeBytes, null, packedScales, rangeTable, levels, o, w, acc); break;
            case 2: Accumulate64<Rows2, TPath>(lanes, rows, count, codeBytes, null, packedScales, rangeTable, levels, o, w, acc); break;
            case 3: Accumulate64<Rows3, TPath>(lanes, rows, count, codeBytes, null, packedScales, rangeTable, levels, o, w, acc); break;
            default: Accumulate64<Rows4, TPath>(lanes, rows, count, codeBytes, null, packedScales, rangeTable, levels, o, w, acc); break;
        }
    }

    /// <summary>The block's first n outlier values (f16) as floats, 16 at a time (dst has room for n rounded up to 16).</summary>
    private static void OutlierFloats(byte* values, int n, float* dst)
    {
        int i = 0;
        for (; i + 16 <= n; i += 16) HalfDot.F16ToF32(Vector256.Load((ushort*)values + i)).Store(dst + i);
        for (; i < n; i++) dst[i] = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(values + 2 * i));
    }

    /// <summary>Each token's 16-lane table zero_j + range_j * level.</summary>
    private static void TokenTables(float* zr, int count, Vector512<float> levels, Vector512<float>* luts)
    {
        for (int j = 0; j < count; j++)
        {
            float zero = zr[2 * j], range = zr[2 * j + 1];
            luts[j] = Vector512.FusedMultiplyAdd(levels, Vector512.Create(range), Vector512.Create(zero));
        }
    }

    private readonly struct ValueOutliers(byte* indices, float* values, int slots, ulong* laneMasks, float* laneValues)
    {
        public readonly ulong* LaneMasks = laneMasks;
        public readonly float* LaneValues = laneValues;
        public readonly byte* Indices = indices;
        public readonly float* Values = values;
        public readonly int Slots = slots;
    }

    /// <summary>Head dim 64: a token's four value registers are decoded once (outliers blended in) and feed every
    /// row's accumulators, which stay in registers for the whole block (up to 4 rows x 4 registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate64<TRows, TPath>(NuqLanes lanes, byte* rows, int count, int codeBytes, Vector512<float>* luts,
        byte* packedScales, float* rangeTable, Vector512<float> levels, in ValueOutliers o, float* w, float* acc)
        where TRows : struct, IRows where TPath : struct, IPath
    {
        var ch0 = lanes.Channel[0]; var ch1 = lanes.Channel[1]; var ch2 = lanes.Channel[2]; var ch3 = lanes.Channel[3];
        var bl = TestBitLow; var bh = TestBitHigh;
        int slots = o.Slots;
        var c0 = lanes.Control[0]; var c1 = lanes.Control[1]; var c2 = lanes.Control[2]; var c3 = lanes.Control[3];
        var s0 = lanes.Shift[0]; var s1 = lanes.Shift[1]; var s2 = lanes.Shift[2]; var s3 = lanes.Shift[3];
        var a00 = Vector512.Load(acc); var a01 = Vector512.Load(acc + 16); var a02 = Vector512.Load(acc + 32); var a03 = Vector512.Load(acc + 48);
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default, a20 = default, a21 = default, a22 = default, a23 = default,
            a30 = default, a31 = default, a32 = default, a33 = default;
        if (TRows.N > 1) { a10 = Vector512.Load(acc + 64); a11 = Vector512.Load(acc + 80); a12 = Vector512.Load(acc + 96); a13 = Vector512.Load(acc + 112); }
        if (TRows.N > 2) { a20 = Vector512.Load(acc + 128); a21 = Vector512.Load(acc + 144); a22 = Vector512.Load(acc + 160); a23 = Vector512.Load(acc + 176); }
        if (TRows.N > 3) { a30 = Vector512.Load(acc + 192); a31 = Vector512.Load(acc + 208); a32 = Vector512.Load(acc + 224); a33 = Vector512.Load(acc + 240); }
        for (int j = 0; j < count; j++)
        {
            RowCodes<TPath>(rows + j * codeBytes, c0, c1, c2, c3, s0, s1, s2, s3, out var i0, out var i1, out var i2, out var i3);
            Vector512<float> lut;
            if (packedScales != null)
            {
                // The token's scale decoded here (TokenScale.Decode, the same float operations) and its 16-entry
                // table built in a register: no per-block scale pass, no table array written and read back.
                int packed = Unsafe.ReadUnaligned<ushort>(packedScales + 2 * j);
                if (!BitConverter.IsLittleEndian) packed = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((ushort)packed);
                float range = rangeTable[packed & (TokenScale.RangeCodes - 1)];
                float zero = ((short)packed >> 10) * (range / 16f);
                lut = Vector512.FusedMultiplyAdd(levels, Vector512.Create(range), Vector512.Create(zero));
            }
            else lut = luts[j];
            var x0 = Avx512F.PermuteVar16x32(lut, i0);
            var x1 = Avx512F.PermuteVar16x32(lut, i1);
            var x2 = Avx512F.PermuteVar16x32(lut, i2);
            var x3 = Avx512F.PermuteVar16x32(lut, i3);
            if (o.LaneMasks != null) BlendOutliers<TPath>(o.LaneMasks[j], o.LaneValues + j * 64, bl, bh, ref x0, ref x1, ref x2, ref x3);
            for (int s = 0; s < slots; s++)
            {
                var vc = Vector512.Create((int)o.Indices[j * slots + s]);
                var vx = Vector512.Create(o.Values[j * slots + s]);
                x0 = Vector512.ConditionalSelect(Vector512.Equals(ch0, vc).AsSingle(), vx, x0);
                x1 = Vector512.ConditionalSelect(Vector512.Equals(ch1, vc).AsSingle(), vx, x1);
                x2 = Vector512.ConditionalSelect(Vector512.Equals(ch2, vc).AsSingle(), vx, x2);
                x3 = Vector512.ConditionalSelect(Vector512.Equals(ch3, vc).AsSingle(), vx, x3);
            }
            var wv = Vector512.Create(w[j]);
            a00 = Vector512.FusedMultiplyAdd(x0, wv, a00); a01 = Vector512.FusedMultiplyAdd(x1, wv, a01);
            a02 = Vector512.FusedMultiplyAdd(x2, wv, a02); a03 = Vector512.FusedMultiplyAdd(x3, wv, a03);
            if (TRows.N > 1)
            {
                wv = Vector512.Create(w[count + j]);
                a10 = Vector512.FusedMultiplyAdd(x0, wv, a10); a11 = Vector512.FusedMultiplyAdd(x1, wv, a11);
                a12 = Vector512.FusedMultiplyAdd(x2, wv, a12); a13 = Vector512.FusedMultiplyAdd(x3, wv, a13);
            }
            if (TRows.N > 2)
            {
                wv = Vector512.Create(w[2 * count + j]);
                a20 = Vector512.FusedMultiplyAdd(x0, wv, a20); a21 = Vector512.FusedMultiplyAdd(x1, wv, a21);
                a22 = Vector512.FusedMultiplyAdd(x2, wv, a22); a23 = Vector512.FusedMultiplyAdd(x3, wv, a23);
            }
            if (TRows.N > 3)
            {
                wv = Vector512.Create(w[3 * count + j]);
                a30 = Vector512.FusedMultiplyAdd(x0, wv, a30); a31 = Vector512.FusedMultiplyAdd(x1, wv, a31);
                a32 = Vector512.FusedMultiplyAdd(x2, wv, a32); a33 = Vector512.FusedMultiplyAdd(x3, wv, a33);
            }
        }
        a00.Store(acc); a01.Store(acc + 16); a02.Store(acc + 32); a03.Store(acc + 48);
        if (TRows.N > 1) { a10.Store(acc + 64); a11.Store(acc + 80); a12.Store(acc + 96); a13.Store(acc + 112); }
        if (TRows.N > 2) { a20.Store(acc + 128); a21.Store(acc + 144); a22.Store(acc + 160); a23.Store(acc + 176); }
        if (TRows.N > 3) { a30.Store(acc + 192); a31.Store(acc + 208); a32.Store(acc + 224); a33.Store(acc + 240); }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Accumulate<TRows>(NuqLanes lanes, byte* rows, int count, int codeBytes,
        Vector512<float>* luts, float* w, float* acc) where TRows : struct, IRows
    {
        int d = lanes.HeadDim;
        bool wide = lanes.LoadBytes == 64;
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
                var row = wide ? Vector512.Load(rows + j * codeBytes) : Vector256.Load(rows + j * codeBytes).ToVector512Unsafe();
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
    private static void DecodeValues(NuqLanes lanes, byte* rows, int count, int codeBytes, Vector512<float>* luts, float* dst)
    {
        int d = lanes.HeadDim;
        bool wide = lanes.LoadBytes == 64;
        for (int j = 0; j < count; j++)
        {
            var row = wide ? Vector512.Load(rows + j * codeBytes) : Vector256.Load(rows + j * codeBytes).ToVector512Unsafe();
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
}
