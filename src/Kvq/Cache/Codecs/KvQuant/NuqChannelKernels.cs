using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kvq.Tensors;

namespace Kvq.Cache.Codecs.KvQuant;

/// <summary>
/// Fused key scores over a channel-major KVQuant key block (<see cref="NuqChannelCodec"/>: channel c's codes of the
/// block's T tokens packed together, B bits each): tokens in lanes, 16 at a time. Per channel, one 8-byte broadcast
/// load holds the 16 tokens' codes; a byte permute (vpermb) and a per-lane shift bring each code into its lane, and a
/// float permute (vpermps) through the channel's own 16-entry table (zero_c + range_c * level, built once per codec)
/// decodes them, scale and zero included. Exact outliers replace their lanes by one masked blend per channel and 16
/// tokens (<see cref="BlockOutliers.ToChannelLanes"/>). RoPE turns the pair (a, b) of 16 tokens with two FMAs and
/// two multiplies from the tokens' cos/sin vectors: for a run of consecutive positions inside one
/// <see cref="RopeAngleTable.Step"/> (every full block of a sequence), base angle times a transposed table of the
/// step offsets (the same float operations as the token-major kernel), else per-token angles computed once per
/// block. Each query row accumulates q[c] * k_c into per-token lanes, so a score needs no horizontal sum.
/// Checked against the codec's DecodeBlockReference + Rope.RotateAt + TileMath reference in NuqFusedKernelTests.
/// </summary>
[SkipLocalsInit]
internal static unsafe class NuqChannelKernels
{
    /// <summary>Most query rows whose scores are kept in registers; above it the rotated keys go to a tile.</summary>
    public const int MaxFusedRows = 8;

    public static bool IsSupported(int bits) =>
        Avx512F.IsSupported && Avx512Vbmi.IsSupported && Vector512.IsHardwareAccelerated && bits is 2 or 3 or 4;

    /// <summary>vpermb control and per-lane shift that bring 16 consecutive B-bit codes (starting on a byte: any group
    /// of 16 tokens starts at bit 16 g B) from an 8-byte broadcast into 16 lanes (garbage above the code's bits).</summary>
    public static (Vector512<byte> Control, Vector512<uint> Shift) Unpacker(int bits)
    {
        Span<byte> ctrl = stackalloc byte[64];
        Span<uint> shift = stackalloc uint[16];
        for (int l = 0; l < 16; l++)
        {
            int bit = l * bits, b = bit >> 3;
            ctrl[4 * l] = (byte)b;
            ctrl[4 * l + 1] = (byte)Math.Min(b + 1, 7);
            ctrl[4 * l + 2] = ctrl[4 * l + 3] = (byte)b;
            shift[l] = (uint)(bit & 7);
        }
        return (Vector512.Create((ReadOnlySpan<byte>)ctrl), Vector512.Create((ReadOnlySpan<uint>)shift));
    }

    /// <summary>Per channel its 16-lane table zero_c + range_c * level (levels repeated to 16: vpermps reads the low
    /// 4 index bits), with the float operation of the token-major kernel (one FMA), so the values are the same.</summary>
    public static float[] ChannelTables(ReadOnlySpan<float> zero, ReadOnlySpan<float> range, ReadOnlySpan<float> levels)
    {
        var lut = NuqLanes.Repeat(levels);
        var t = new float[zero.Length * 16];
        for (int c = 0; c < zero.Length; c++)
            Vector512.FusedMultiplyAdd(lut, Vector512.Create(range[c]), Vector512.Create(zero[c])).CopyTo(t.AsSpan(c * 16, 16));
        return t;
    }

    /// <summary>The step offsets' cos/sin transposed: (pairs, <see cref="DeltaStride"/>), offset d of pair p at
    /// p * DeltaStride + d; the 16 entries past the step repeat the first ones (lanes past a block's count only).</summary>
    public sealed class DeltaTables
    {
        public const int DeltaStride = RopeAngleTable.Step + 16;
        public readonly RopeAngleTable Table;
        public readonly float[] Cos, Sin;

        public DeltaTables(RopeAngleTable table)
        {
            Table = table;
            int pairs = table.Pairs;
            Cos = new float[pairs * DeltaStride];
            Sin = new float[pairs * DeltaStride];
            var dc = table.DeltaCos;
            var ds = table.DeltaSin;
            for (int p = 0; p < pairs; p++)
                for (int d = 0; d < DeltaStride; d++)
                {
                    Cos[p * DeltaStride + d] = dc[(d % RopeAngleTable.Step) * pairs + p];
                    Sin[p * DeltaStride + d] = ds[(d % RopeAngleTable.Step) * pairs + p];
                }
        }
    }

    /// <summary>Channel pair p of a head (RoPE style): (2p, 2p+1) for normal RoPE, (p, p + d/2) for NeoX.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (int A, int B) Pair(int p, int half, bool normal) => normal ? (2 * p, 2 * p + 1) : (p, p + half);

    /// <summary>scores[i, j] = q_i . R(positions[j]) k_j (or q_i . k_j with <paramref name="rope"/> null: keys stored
    /// after RoPE) for the first count tokens of a channel-major block. <paramref name="codes"/>: channel c's codes at
    /// c * chanBytes. Outliers: per channel and 16 tokens a lane mask (masks[c * groups + g]) and replacement values
    /// (dense[(c * groups + g) * 16 + lane]), groups = ceil(count / 16); empty spans: none. q: nq rows of head dim,
    /// natural channel order. Above <see cref="MaxFusedRows"/> rows the rotated keys are written to
    /// <paramref name="tile"/> (count, headDim) and scored by TileMath.</summary>
    public static void KeyScores(ReadOnlySpan<byte> codes, int chanBytes, int bits, int headDim, int count, ReadOnlySpan<float> luts,
        ReadOnlySpan<ushort> masks, ReadOnlySpan<float> dense, Rope? rope, ReadOnlySpan<int> positions, DeltaTables? deltas,
        ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        int groups = (count + 15) >> 4;
        bool outliers = !masks.IsEmpty;
        bool rotate = rope != null;
        int half = headDim / 2, pairs = rotate ? half : 0;
        if (count < 1 || codes.Length < headDim * chanBytes || chanBytes < NuqBits.Bytes(count, bits) || luts.Length < headDim * 16
            || q.Length < nq * headDim || scores.Length < nq * count
            || (outliers && (masks.Length < headDim * groups || dense.Length < headDim * groups * 16))
            || (rotate && (positions.Length < count || rope!.RopeDims != headDim || headDim % 2 != 0))
            || (nq > MaxFusedRows && tile.Length < count * headDim))
            throw new ArgumentException($"channel-major key scores: {nq} rows over {count} tokens, head dim {headDim}, {codes.Length} code bytes " +
                $"({chanBytes} a channel), {luts.Length} table values, {masks.Length} masks, {dense.Length} outlier values, {q.Length} query values, " +
                $"{scores.Length} scores, {tile.Length} tile values");
        var (ctrl, shift) = Unpacker(bits);
        // Angles: a base per pair (broadcast) times per-token offsets. A run of consecutive positions inside one step
        // reads the transposed offset table directly; anything else gets per-token angles for this block, with a unit
        // base (fma(1, c, -(0 * s)) = c exactly).
        int angleStride = 0, angle0 = 0, own = 0, stride = groups * 16;
        float[]? baseCos = null, baseSin = null;
        bool run = false;
        if (rotate)
        {
            int p0 = positions[0];
            run = p0 >= 0 && p0 % RopeAngleTable.Step + count <= RopeAngleTable.Step;
            for (int j = 1; run && j < count; j++) run = positions[j] == p0 + j;
            if (!run) own = pairs * stride;
        }
        Span<float> ownCos = own <= 4096 ? stackalloc float[own] : new float[own];
        Span<float> ownSin = own <= 4096 ? stackalloc float[own] : new float[own];
        Span<float> unitBase = stackalloc float[own == 0 ? 0 : 2 * pairs];
        if (rotate)
        {
            var table = deltas!.Table;
            if (run)
            {
                (baseCos, baseSin) = table.Bases(positions[0]);
                angleStride = DeltaTables.DeltaStride;
                angle0 = positions[0] % RopeAngleTable.Step;
            }
            else
            {
                unitBase[..pairs].Fill(1f);
                unitBase[pairs..].Clear();
                BlockAngles(table, positions[..count], pairs, stride, ownCos, ownSin);
                angleStride = stride;
            }
        }
        bool fused = nq <= MaxFusedRows;
        Span<float> keys = stackalloc float[fused ? 0 : headDim * 16];
        fixed (byte* pc = codes)
        fixed (float* pl = luts, pd = dense, pq = q, ps = scores, pt = tile, pk = keys)
        fixed (ushort* pm = masks)
        fixed (float* bc = baseCos, bs = baseSin, oc = ownCos, os = ownSin, ub = unitBase)
        fixed (float* dc = deltas == null ? null : deltas.Cos, ds = deltas == null ? null : deltas.Sin)
        fixed (int* pos = positions)
        {
            var k = new Block(pc, codes.Length, chanBytes, bits, headDim, groups, pl, outliers ? pm : null, pd, ctrl, shift);
            // Angle sources: cos(j) = fms(cbase[p], cd[p * stride + a0 + j], sbase[p] * sd[...]).
            float* cbase = null, sbase = null, cd = null, sd = null;
            if (rotate)
            {
                if (baseCos != null)
                {
                    int b = positions[0] / RopeAngleTable.Step * pairs;
                    cbase = bc + b; sbase = bs + b; cd = dc; sd = ds;
                }
                else { cbase = ub; sbase = ub + pairs; cd = oc; sd = os; }
            }
            var a = new Angles(cbase, sbase, cd, sd, angleStride, angle0);
            bool normal = rope == null || rope.Style == RopeStyle.Normal;
            var acc = stackalloc Vector512<float>[4];
            for (int g = 0; g < groups; g++)
            {
                int n16 = Math.Min(16, count - 16 * g);
                if (!fused)
                {
                    DecodeGroup(k, g, rotate, pairs, half, normal, a, pk);
                    for (int c = 0; c < headDim; c++)
                        for (int l = 0; l < n16; l++) pt[(16 * g + l) * headDim + c] = pk[c * 16 + l];
                    continue;
                }
                for (int r0 = 0; r0 < nq; r0 += 4)
                {
                    int rows = Math.Min(4, nq - r0);
                    float* qr = pq + r0 * headDim;
                    switch (rows)
                    {
                        case 1: Group<Rows1>(k, g, rotate, pairs, half, normal, a, qr, acc); break;
                        case 2: Group<Rows2>(k, g, rotate, pairs, half, normal, a, qr, acc); break;
                        case 3: Group<Rows3>(k, g, rotate, pairs, half, normal, a, qr, acc); break;
                        default: Group<Rows4>(k, g, rotate, pairs, half, normal, a, qr, acc); break;
                    }
                    for (int i = 0; i < rows; i++)
                    {
                        float* o = ps + (r0 + i) * count + 16 * g;
                        if (n16 == 16) acc[i].Store(o);
                        else for (int l = 0; l < n16; l++) o[l] = acc[i].GetElement(l);
                    }
                }
            }
            if (!fused) Attention.TileMath.Scores(tile[..(count * headDim)], count, headDim, q, nq, scores);
        }
    }

    /// <summary>Whether <see cref="KeyScoresBuffered"/> takes a block: pre-RoPE, full rotation, head dim a multiple of 4
    /// and at most 256, blocks of at most 32 tokens, at most <see cref="MaxFusedRows"/> query rows.</summary>
    public static bool Buffered(int headDim, int blockTokens, int nq) =>
        headDim % 4 == 0 && headDim <= 256 && blockTokens <= 32 && nq >= 1 && nq <= MaxFusedRows;

    /// <summary>vpermb controls for <see cref="KeyScoresBuffered"/>: for channel k = 0..3 of a 64-byte load (4 channel
    /// runs of chanBytes) and token group g = 0..1, lane l takes the bytes holding token 16 g + l's code.</summary>
    public static Vector512<byte>[] GroupControls(int chanBytes, int bits)
    {
        var r = new Vector512<byte>[8];
        Span<byte> ctrl = stackalloc byte[64];
        for (int k = 0; k < 4; k++)
            for (int g = 0; g < 2; g++)
            {
                for (int l = 0; l < 16; l++)
                {
                    int bit = (16 * g + l) * bits, b = Math.Min(k * chanBytes + (bit >> 3), 63);
                    ctrl[4 * l] = (byte)b;
                    ctrl[4 * l + 1] = (byte)Math.Min(b + 1, 63);
                    ctrl[4 * l + 2] = ctrl[4 * l + 3] = (byte)b;
                }
                r[2 * k + g] = Vector512.Create((ReadOnlySpan<byte>)ctrl);
            }
        return r;
    }

    /// <summary>The decode-time path of <see cref="KeyScores"/> (same inputs; outliers as the block's unpacked sparse
    /// entries, sorted by index): per 16 tokens, every channel decoded into an L1 buffer (one 64-byte load per 4
    /// channels, vpermb + vpsrlvd + vpermps per channel), the group's exact outliers stored over their lanes, then per
    /// RoPE pair the two channels rotated and dotted with each query row into per-token lanes.</summary>
    public static void KeyScoresBuffered(ReadOnlySpan<byte> codes, int chanBytes, int bits, int headDim, int count, ReadOnlySpan<float> luts,
        Vector512<byte>[] controls, ReadOnlySpan<int> outlierIndex, ReadOnlySpan<float> outlierValue, Rope rope, ReadOnlySpan<int> positions,
        DeltaTables deltas, ReadOnlySpan<float> q, int nq, Span<float> scores)
    {
        int groups = (count + 15) >> 4, half = headDim / 2, pairs = half;
        if (count < 1 || count > 32 || !Buffered(headDim, 32, nq) || codes.Length < headDim * chanBytes || chanBytes < NuqBits.Bytes(count, bits)
            || luts.Length < headDim * 16 || controls.Length < 8 || outlierValue.Length < outlierIndex.Length || positions.Length < count
            || rope.RopeDims != headDim || q.Length < nq * headDim || scores.Length < nq * count)
            throw new ArgumentException($"buffered channel-major key scores: {nq} rows over {count} tokens, head dim {headDim}, {codes.Length} code bytes " +
                $"({chanBytes} a channel), {luts.Length} table values, {positions.Length} positions, {q.Length} query values, {scores.Length} scores");
        int p0 = positions[0];
        bool run = p0 >= 0 && p0 % RopeAngleTable.Step + count <= RopeAngleTable.Step;
        for (int j = 1; run && j < count; j++) run = positions[j] == p0 + j;
        int own = run ? 0 : pairs * groups * 16;
        Span<float> ownCos = own <= 4096 ? stackalloc float[own] : new float[own];
        Span<float> ownSin = own <= 4096 ? stackalloc float[own] : new float[own];
        Span<float> unitBase = stackalloc float[run ? 0 : 2 * pairs];
        float[]? baseCos = null, baseSin = null;
        int angleStride, angle0 = 0;
        if (run)
        {
            (baseCos, baseSin) = deltas.Table.Bases(p0);
            angleStride = DeltaTables.DeltaStride;
            angle0 = p0 % RopeAngleTable.Step;
        }
        else
        {
            unitBase[..pairs].Fill(1f);
            unitBase[pairs..].Clear();
            BlockAngles(deltas.Table, positions[..count], pairs, groups * 16, ownCos, ownSin);
            angleStride = groups * 16;
        }
        // The last 64-byte load starts at channel headDim - 4: past the block when a channel's run is under 16 bytes.
        bool copy = (headDim - 4) * chanBytes + 64 > codes.Length;
        Span<byte> padded = stackalloc byte[copy ? headDim * chanBytes + 64 : 0];
        if (copy) codes[..(headDim * chanBytes)].CopyTo(padded);
        var buf = stackalloc Vector512<float>[headDim];
        var acc = stackalloc Vector512<float>[MaxFusedRows];
        var shift = Unpacker(bits).Shift;
        bool normal = rope.Style == RopeStyle.Normal;
        int shiftD = (headDim & (headDim - 1)) == 0 ? System.Numerics.BitOperations.TrailingZeroCount(headDim) : -1;
        fixed (byte* pc0 = codes, pp = padded)
        fixed (float* pl = luts, pq = q, ps = scores, oc = ownCos, os = ownSin, ub = unitBase, ov = outlierValue)
        fixed (float* bc = baseCos, bs = baseSin, dc = deltas.Cos, ds = deltas.Sin)
        fixed (int* oi = outlierIndex)
        fixed (Vector512<byte>* ctl = controls)
        {
            byte* pc = copy ? pp : pc0;
            float* cbase, sbase, cd, sd;
            if (run)
            {
                int b = p0 / RopeAngleTable.Step * pairs;
                cbase = bc + b; sbase = bs + b; cd = dc; sd = ds;
            }
            else { cbase = ub; sbase = ub + pairs; cd = oc; sd = os; }
            var a = new Angles(cbase, sbase, cd, sd, angleStride, angle0);
            int e = 0, entries = outlierIndex.Length;
            for (int g = 0; g < groups; g++)
            {
                // Decode: 4 channels per load.
                var k0 = ctl[g]; var k1 = ctl[2 + g]; var k2 = ctl[4 + g]; var k3 = ctl[6 + g];
                for (int c = 0; c < headDim; c += 4)
                {
                    var row = Vector512.Load(pc + c * chanBytes);
                    float* l = pl + 16 * c;
                    buf[c] = Avx512F.PermuteVar16x32(Vector512.Load(l), Avx512F.ShiftRightLogicalVariable(Avx512Vbmi.PermuteVar64x8(row, k0).AsUInt32(), shift).AsInt32());
                    buf[c + 1] = Avx512F.PermuteVar16x32(Vector512.Load(l + 16), Avx512F.ShiftRightLogicalVariable(Avx512Vbmi.PermuteVar64x8(row, k1).AsUInt32(), shift).AsInt32());
                    buf[c + 2] = Avx512F.PermuteVar16x32(Vector512.Load(l + 32), Avx512F.ShiftRightLogicalVariable(Avx512Vbmi.PermuteVar64x8(row, k2).AsUInt32(), shift).AsInt32());
                    buf[c + 3] = Avx512F.PermuteVar16x32(Vector512.Load(l + 48), Avx512F.ShiftRightLogicalVariable(Avx512Vbmi.PermuteVar64x8(row, k3).AsUInt32(), shift).AsInt32());
                }
                // Exact outliers of the group's tokens over their lanes (entries sorted by token).
                float* fb = (float*)buf;
                int limit = Math.Min(count, 16 * g + 16) * headDim;
                for (; e < entries && oi[e] < limit; e++)
                {
                    int ix = oi[e], t = shiftD >= 0 ? ix >> shiftD : ix / headDim;
                    fb[(ix - t * headDim) * 16 + (t & 15)] = ov[e];
                }
                int n16 = Math.Min(16, count - 16 * g);
                for (int r0 = 0; r0 < nq; r0 += 4)
                {
                    int rows = Math.Min(4, nq - r0);
                    float* qr = pq + r0 * headDim;
                    switch (rows)
                    {
                        case 1: Pairs<Rows1>(buf, pairs, half, normal, a, g, headDim, qr, acc); break;
                        case 2: Pairs<Rows2>(buf, pairs, half, normal, a, g, headDim, qr, acc); break;
                        case 3: Pairs<Rows3>(buf, pairs, half, normal, a, g, headDim, qr, acc); break;
                        default: Pairs<Rows4>(buf, pairs, half, normal, a, g, headDim, qr, acc); break;
                    }
                    for (int i = 0; i < rows; i++)
                    {
                        float* o = ps + (r0 + i) * count + 16 * g;
                        if (n16 == 16) acc[i].Store(o);
                        else for (int l = 0; l < n16; l++) o[l] = acc[i].GetElement(l);
                    }
                }
            }
        }
    }

    /// <summary>Rotation and dots of one decoded group (buf: a vector of 16 tokens per channel).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Pairs<TRows>(Vector512<float>* buf, int pairs, int half, bool normal, in Angles a, int g, int d, float* q,
        Vector512<float>* acc) where TRows : struct, IRows
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        float* bcos = a.BaseCos, bsin = a.BaseSin;
        float* cd = a.Cos + a.First + 16 * g, sd = a.Sin + a.First + 16 * g;
        int stride = a.Stride;
        int stepA = normal ? 2 : 1, offB = normal ? 1 : half;
        for (int p = 0; p < pairs; p++)
        {
            int ca = p * stepA, cb = ca + offB;
            var x = buf[ca];
            var y = buf[cb];
            var cbv = Vector512.Create(bcos[p]);
            var sbv = Vector512.Create(bsin[p]);
            var cdv = Vector512.Load(cd + p * stride);
            var sdv = Vector512.Load(sd + p * stride);
            var cos = Avx512F.FusedMultiplySubtract(cbv, cdv, sbv * sdv);
            var sin = Vector512.FusedMultiplyAdd(sbv, cdv, cbv * sdv);
            var u = Avx512F.FusedMultiplySubtract(x, cos, y * sin);
            var v = Vector512.FusedMultiplyAdd(x, sin, y * cos);
            a0 = Vector512.FusedMultiplyAdd(Vector512.Create(q[ca]), u, a0);
            a0 = Vector512.FusedMultiplyAdd(Vector512.Create(q[cb]), v, a0);
            if (TRows.N > 1)
            {
                a1 = Vector512.FusedMultiplyAdd(Vector512.Create(q[d + ca]), u, a1);
                a1 = Vector512.FusedMultiplyAdd(Vector512.Create(q[d + cb]), v, a1);
            }
            if (TRows.N > 2)
            {
                a2 = Vector512.FusedMultiplyAdd(Vector512.Create(q[2 * d + ca]), u, a2);
                a2 = Vector512.FusedMultiplyAdd(Vector512.Create(q[2 * d + cb]), v, a2);
            }
            if (TRows.N > 3)
            {
                a3 = Vector512.FusedMultiplyAdd(Vector512.Create(q[3 * d + ca]), u, a3);
                a3 = Vector512.FusedMultiplyAdd(Vector512.Create(q[3 * d + cb]), v, a3);
            }
        }
        acc[0] = a0;
        if (TRows.N > 1) acc[1] = a1;
        if (TRows.N > 2) acc[2] = a2;
        if (TRows.N > 3) acc[3] = a3;
    }

    /// <summary>Per-token angles of a block laid out (pairs, stride): the table's own formula (base at p / Step times
    /// the offset p % Step), as the token-major kernel computes them.</summary>
    private static void BlockAngles(RopeAngleTable table, ReadOnlySpan<int> positions, int pairs, int stride, Span<float> cos, Span<float> sin)
    {
        int maxPos = 0;
        foreach (int p in positions) maxPos = Math.Max(maxPos, p);
        var (bc, bs) = table.Bases(maxPos);
        var dc = table.DeltaCos;
        var ds = table.DeltaSin;
        for (int j = 0; j < positions.Length; j++)
        {
            int p = positions[j], bo = p / RopeAngleTable.Step * pairs, d0 = p % RopeAngleTable.Step * pairs;
            for (int i = 0; i < pairs; i++)
            {
                float cb = bc[bo + i], sb = bs[bo + i], cdv = dc[d0 + i], sdv = ds[d0 + i];
                cos[i * stride + j] = MathF.FusedMultiplyAdd(cb, cdv, -(sb * sdv));
                sin[i * stride + j] = MathF.FusedMultiplyAdd(sb, cdv, cb * sdv);
            }
        }
        // Lanes past the block's count: finite values (their scores are never stored).
        for (int i = 0; i < pairs; i++)
            for (int j = positions.Length; j < stride; j++) { cos[i * stride + j] = 1f; sin[i * stride + j] = 0f; }
    }

    private readonly struct Block(byte* codes, int length, int chanBytes, int bits, int headDim, int groups, float* luts,
        ushort* masks, float* dense, Vector512<byte> control, Vector512<uint> shift)
    {
        public readonly byte* Codes = codes;
        public readonly int Length = length, ChanBytes = chanBytes, Bits = bits, HeadDim = headDim, Groups = groups;
        public readonly float* Luts = luts, Dense = dense;
        public readonly ushort* Masks = masks;
        public readonly Vector512<byte> Control = control;
        public readonly Vector512<uint> Shift = shift;
    }

    private readonly struct Angles(float* baseCos, float* baseSin, float* cos, float* sin, int stride, int first)
    {
        public readonly float* BaseCos = baseCos, BaseSin = baseSin, Cos = cos, Sin = sin;
        public readonly int Stride = stride, First = first;
    }

    /// <summary>Channel c of tokens 16 g .. 16 g + 15, decoded, outliers in.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Decode(in Block k, int c, int g)
    {
        int at = c * k.ChanBytes + 2 * g * k.Bits;
        ulong w = at + 8 <= k.Length ? Unsafe.ReadUnaligned<ulong>(k.Codes + at) : Tail(k.Codes + at, k.Length - at);
        var idx = Avx512F.ShiftRightLogicalVariable(
            Avx512Vbmi.PermuteVar64x8(Vector512.Create(w).AsByte(), k.Control).AsUInt32(), k.Shift).AsInt32();
        var x = Avx512F.PermuteVar16x32(Vector512.Load(k.Luts + 16 * c), idx);
        if (k.Masks != null)
        {
            int cg = c * k.Groups + g;
            x = Vector512.ConditionalSelect(LaneBits(k.Masks[cg]), Vector512.Load(k.Dense + 16 * cg), x);
        }
        return x;
    }

    /// <summary>The last few bytes of a block (a load of 8 would read past it), little-endian, zero above.</summary>
    private static ulong Tail(byte* p, int n)
    {
        ulong w = 0;
        for (int i = 0; i < n && i < 8; i++) w |= (ulong)p[i] << (8 * i);
        return w;
    }

    private static readonly Vector512<uint> LaneBit = Vector512.Create(1u, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> LaneBits(uint bits)
    {
        var b = LaneBit;
        return Vector512.Equals(Vector512.Create(bits) & b, b).AsSingle();
    }

    /// <summary>cos and sin of pair p's angle for tokens 16 g .. 16 g + 15.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<float> Cos, Vector512<float> Sin) Angle(in Angles a, int p, int g)
    {
        int o = p * a.Stride + a.First + 16 * g;
        var cb = Vector512.Create(a.BaseCos[p]);
        var sb = Vector512.Create(a.BaseSin[p]);
        var cd = Vector512.Load(a.Cos + o);
        var sd = Vector512.Load(a.Sin + o);
        return (Avx512F.FusedMultiplySubtract(cb, cd, sb * sd), Vector512.FusedMultiplyAdd(sb, cd, cb * sd));
    }

    /// <summary>Scores of up to 4 query rows for tokens 16 g .. 16 g + 15 into acc[0..rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Group<TRows>(in Block k, int g, bool rotate, int pairs, int half, bool normal, in Angles a, float* q,
        Vector512<float>* acc) where TRows : struct, IRows
    {
        int d = k.HeadDim;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        if (rotate)
        {
            for (int p = 0; p < pairs; p++)
            {
                var (ca, cb) = Pair(p, half, normal);
                var x = Decode(k, ca, g);
                var y = Decode(k, cb, g);
                var (cos, sin) = Angle(a, p, g);
                var u = Avx512F.FusedMultiplySubtract(x, cos, y * sin);
                var v = Vector512.FusedMultiplyAdd(x, sin, y * cos);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Create(q[ca]), u, a0);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Create(q[cb]), v, a0);
                if (TRows.N > 1)
                {
                    a1 = Vector512.FusedMultiplyAdd(Vector512.Create(q[d + ca]), u, a1);
                    a1 = Vector512.FusedMultiplyAdd(Vector512.Create(q[d + cb]), v, a1);
                }
                if (TRows.N > 2)
                {
                    a2 = Vector512.FusedMultiplyAdd(Vector512.Create(q[2 * d + ca]), u, a2);
                    a2 = Vector512.FusedMultiplyAdd(Vector512.Create(q[2 * d + cb]), v, a2);
                }
                if (TRows.N > 3)
                {
                    a3 = Vector512.FusedMultiplyAdd(Vector512.Create(q[3 * d + ca]), u, a3);
                    a3 = Vector512.FusedMultiplyAdd(Vector512.Create(q[3 * d + cb]), v, a3);
                }
            }
        }
        else
        {
            for (int c = 0; c < d; c++)
            {
                var x = Decode(k, c, g);
                a0 = Vector512.FusedMultiplyAdd(Vector512.Create(q[c]), x, a0);
                if (TRows.N > 1) a1 = Vector512.FusedMultiplyAdd(Vector512.Create(q[d + c]), x, a1);
                if (TRows.N > 2) a2 = Vector512.FusedMultiplyAdd(Vector512.Create(q[2 * d + c]), x, a2);
                if (TRows.N > 3) a3 = Vector512.FusedMultiplyAdd(Vector512.Create(q[3 * d + c]), x, a3);
            }
        }
        acc[0] = a0;
        if (TRows.N > 1) acc[1] = a1;
        if (TRows.N > 2) acc[2] = a2;
        if (TRows.N > 3) acc[3] = a3;
    }

    /// <summary>Tokens 16 g .. 16 g + 15 decoded and rotated, channel-major into keys (headDim x 16).</summary>
    private static void DecodeGroup(in Block k, int g, bool rotate, int pairs, int half, bool normal, in Angles a, float* keys)
    {
        if (!rotate)
        {
            for (int c = 0; c < k.HeadDim; c++) Decode(k, c, g).Store(keys + 16 * c);
            return;
        }
        for (int p = 0; p < pairs; p++)
        {
            var (ca, cb) = Pair(p, half, normal);
            var x = Decode(k, ca, g);
            var y = Decode(k, cb, g);
            var (cos, sin) = Angle(a, p, g);
            Avx512F.FusedMultiplySubtract(x, cos, y * sin).Store(keys + 16 * ca);
            Vector512.FusedMultiplyAdd(x, sin, y * cos).Store(keys + 16 * cb);
        }
    }

    private interface IRows { static abstract int N { get; } }
    private struct Rows1 : IRows { public static int N => 1; }
    private struct Rows2 : IRows { public static int N => 2; }
    private struct Rows3 : IRows { public static int N => 3; }
    private struct Rows4 : IRows { public static int N => 4; }
}
