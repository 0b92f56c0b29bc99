using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kvq.Tensors.Quant;

/// <summary>
/// Matrix-vector products of Q8_0, Q4_0 and Q5_0 weights (read in place, ggml's layout) with an activation row rounded to
/// Q8_0 (<see cref="ActivationQuant"/>), on integers with AVX-512BW, for decode. Per weight block: Σ w_code · x_code in
/// int32 (vpmaddubsw, unsigned by signed bytes, then vpmaddwd with ones), converted once and multiplied by
/// d_w · d_x, as <see cref="Q8Dot"/> computes it. What makes it faster than <see cref="Q8Dot"/>'s per-row kernel and
/// the float kernels over the round-tripped row:
/// <list type="bullet">
/// <item>The activation row is prepared once per product (not once per weight row): its codes in the order the kernel
/// reads them, its scales d_x in f32, and (Q4_0, Q5_0) 8 or 16 · Σ x_code per block, so that the weights' unsigned
/// codes go into vpmaddubsw as they are and the -8 or -16 offset is one integer subtraction per four blocks.</item>
/// <item>The weights' f16 scales are copied once per matrix into a contiguous array (<see cref="ScaleCopy"/>, 2 bytes a
/// block; the codes are read in place), so a row's scales are widened 16 at a time in vector registers (.NET has no
/// vcvtph2ps; a scalar conversion per block cost as much as the block's dot, a gather from the blocks ~40% of a
/// 384-column row), multiplied by d_x, and spread to the lanes of their blocks' partial sums by one vpermps a pair or
/// quad.</item>
/// <item>Rows are summed across lanes four at a time (<see cref="Sum4"/>), ~3 instructions a row instead of ~24.</item>
/// </list>
/// Rows stay one stream each, in order (the f16 kernel measured that interleaved row streams defeat the prefetcher).
/// A row's value does not depend on which rows share its pass, so <see cref="WeightMatrix.MatVecRows"/> equals
/// <see cref="WeightMatrix.MatVec"/> bit for bit. Blocks past the last whole pair (Q8_0) or quad (Q4_0, Q5_0) take the scalar
/// loop. The sums equal <see cref="Q8Dot.DotScalar"/>'s to float rounding (other order of the block terms).
/// </summary>
public static unsafe class Int8MatVec
{
    /// <summary>A/B switch for benchmarks (bench/Kvq.Micro): false sends products back to the kernels used before.</summary>
    internal static bool Enabled { get; set; } = true;

    public static bool IsSupported => Avx512BW.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>Whether <paramref name="weight"/> rows have this kernel on this machine (and it is switched on).</summary>
    public static bool Handles(GgmlType weight) => Enabled && IsSupported && weight is GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q5_0;

    /// <summary>Blocks a row's code loop takes together: 2 (Q8_0, one 512-bit register) or 4 (Q4_0, Q5_0).</summary>
    private static int Unit(GgmlType weight) => weight == GgmlType.Q8_0 ? 2 : 4;

    /// <summary>Bytes of one prepared activation row of <paramref name="cols"/> values (64-byte multiple).</summary>
    public static int PreparedBytes(int cols)
    {
        int nb = cols / 32;
        return CodesBytes(nb) + ScalesBytes(nb) + 64 * (nb / 4);
    }

    private static int CodesBytes(int nb) => (32 * nb + 63) & ~63;
    private static int ScalesBytes(int nb) => 4 * Round16(nb);
    private static int Round16(int n) => (n + 15) & ~15;

    /// <summary>
    /// Rounds <paramref name="x"/> to Q8_0 (ggml's encoder, <see cref="ActivationQuant.Quantize"/>) into
    /// <paramref name="dst"/> (<see cref="PreparedBytes"/>, 64-byte aligned) in the layout the <paramref name="weight"/>
    /// kernel reads: codes (Q8_0: in value order; Q4_0, Q5_0: per quad of blocks the four blocks' values 0-15, then their
    /// values 16-31, matching a nibble register's low and high halves; blocks past the last quad in value order), then
    /// d_x per block in f32 (zero-padded to 16), then (Q4_0, Q5_0) per quad 16 int32 with 8 (Q5_0: 16) · Σ x_code of
    /// block k in lane 4k.
    /// </summary>
    public static void Prepare(GgmlType weight, ReadOnlySpan<float> x, byte* dst)
    {
        if (x.Length % 32 != 0) throw new ArgumentException($"Int8MatVec: {x.Length} values is not a multiple of 32");
        int nb = x.Length / 32;
        sbyte* codes = (sbyte*)dst;
        float* dx = (float*)(dst + CodesBytes(nb));
        int* corr = (int*)(dst + CodesBytes(nb) + ScalesBytes(nb));
        int quads = weight == GgmlType.Q8_0 ? 0 : nb / 4;
        int offset = weight == GgmlType.Q5_0 ? 16 : 8; // the codes' offset: Σ (q - o)·x = Σ q·x - o·Σ x
        new Span<int>(corr, 16 * (nb / 4)).Clear();
        new Span<float>(dx, Round16(nb)).Clear();
        sbyte* block = stackalloc sbyte[32];
        fixed (float* px = x)
        {
            for (int b = 0; b < nb; b++)
            {
                ushort h = ActivationQuant.BlockQ8_0(px + 32 * b, (byte*)block);
                dx[b] = QuantFormats.HalfToSingle(h);
                if (b < 4 * quads)
                {
                    int q = b / 4, k = b % 4, sum = 0;
                    for (int j = 0; j < 32; j++) sum += block[j];
                    corr[16 * q + 4 * k] = offset * sum;
                    new ReadOnlySpan<sbyte>(block, 16).CopyTo(new Span<sbyte>(codes + 128 * q + 16 * k, 16));
                    new ReadOnlySpan<sbyte>(block + 16, 16).CopyTo(new Span<sbyte>(codes + 128 * q + 64 + 16 * k, 16));
                }
                else new ReadOnlySpan<sbyte>(block, 32).CopyTo(new Span<sbyte>(codes + 32 * b, 32));
            }
        }
    }

    /// <summary>
    /// The f16 scale of every block of <paramref name="rows"/> rows of <paramref name="nb"/> blocks, contiguous (row r's
    /// at r · nb), plus 16 zero halves so that a 16-half load at any block stays inside. The code loop reads these
    /// instead of the blocks' own: gathering them from 18- or 34-byte strides took ~40% of a 384-column row's time.
    /// 2 bytes a block: 6% of a Q8_0 matrix, 11% of a Q4_0 one, 9% of a Q5_0 one.
    /// </summary>
    public static ushort[] ScaleCopy(GgmlType weight, byte* w, long rowBytes, int rows, int nb)
    {
        int ts = GgmlTypeInfo.TypeSize(weight);
        var h = GC.AllocateArray<ushort>(rows * nb + 16, pinned: true);
        for (int r = 0; r < rows; r++)
        {
            byte* row = w + r * rowBytes;
            for (int b = 0; b < nb; b++) h[r * nb + b] = Unsafe.ReadUnaligned<ushort>(row + b * ts);
        }
        return h;
    }

    /// <summary>
    /// y[r] = row r · x for <paramref name="rows"/> rows of <paramref name="nb"/> blocks from <paramref name="w"/>
    /// (<paramref name="rowBytes"/> apart), their scales at <paramref name="scales"/> (<see cref="ScaleCopy"/>, from the
    /// same first row), x prepared by <see cref="Prepare"/> for the same weight type.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Rows(GgmlType weight, byte* w, long rowBytes, ushort* scales, int rows, int nb, byte* prepared, float* y)
    {
        if (!IsSupported || weight is not (GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q5_0))
            throw new NotSupportedException($"Int8MatVec: no AVX-512BW kernel for {weight} on this machine");
        sbyte* codes = (sbyte*)prepared;
        float* dx = (float*)(prepared + CodesBytes(nb));
        int* corr = (int*)(prepared + CodesBytes(nb) + ScalesBytes(nb));
        int unit = Unit(weight);
        int nbMain = nb - nb % unit;
        for (int r = 0; r < rows; r += 4)
        {
            int k = Math.Min(4, rows - r);
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
            for (int i = 0; i < k; i++)
            {
                byte* row = w + (r + i) * rowBytes;
                ushort* sc = scales + (long)(r + i) * nb;
                var acc = weight switch
                {
                    GgmlType.Q8_0 => RowQ8_0(row, sc, nbMain, codes, dx),
                    GgmlType.Q4_0 => RowNibbles<Q4Codes>(row, sc, nbMain, codes, corr, dx),
                    _ => RowNibbles<Q5Codes>(row, sc, nbMain, codes, corr, dx),
                };
                float tail = nbMain < nb ? Tail(weight, row, nbMain, nb, codes, dx) : 0;
                switch (i)
                {
                    case 0: a0 = acc; t0 = tail; break;
                    case 1: a1 = acc; t1 = tail; break;
                    case 2: a2 = acc; t2 = tail; break;
                    default: a3 = acc; t3 = tail; break;
                }
            }
            var sums = Sum4(a0, a1, a2, a3);
            y[r] = sums.GetElement(0) + t0;
            if (k > 1) y[r + 1] = sums.GetElement(1) + t1;
            if (k > 2) y[r + 2] = sums.GetElement(2) + t2;
            if (k > 3) y[r + 3] = sums.GetElement(3) + t3;
        }
    }

    /// <summary>Q8_0: two blocks per register; vpmaddubsw needs one unsigned operand, so it takes |w| and x with w's
    /// sign (a masked negation: vpsignb has no 512-bit form). |w| &lt;= 128 and |x| &lt;= 127: no pair saturates.</summary>
    // The row kernels are calls of their own: inlined into Rows, the JIT spilled the pointers they use to the stack.
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static Vector512<float> RowQ8_0(byte* row, ushort* sc, int nbMain, sbyte* x, float* dx)
    {
        var acc0 = Vector512<float>.Zero;
        var acc1 = Vector512<float>.Zero;
        var ones = Vector512.Create((short)1);
        var two = Vector512.Create(2);
        for (int g = 0; g < nbMain; g += 16)
        {
            // Sixteen blocks' d_w · d_x; pair j's lanes take blocks 2j (lanes 0-7) and 2j + 1 (8-15).
            var d = Scales16(sc + g, dx + g);
            var idx = Vector512.Create(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
            int pairs = Math.Min(16, nbMain - g) / 2, p = 0;
            byte* w = row + 34 * g;
            sbyte* xg = x + 32 * g;
            // Pointers stepped rather than indexed: the JIT multiplies and sign-extends an index in every use.
            for (; p + 2 <= pairs; p += 2, w += 136, xg += 128)
            {
                acc0 = PairQ8_0(w, xg, Avx512F.PermuteVar16x32(d, idx), ones, acc0);
                idx += two;
                acc1 = PairQ8_0(w + 68, xg + 64, Avx512F.PermuteVar16x32(d, idx), ones, acc1);
                idx += two;
            }
            if (p < pairs) acc0 = PairQ8_0(w, xg, Avx512F.PermuteVar16x32(d, idx), ones, acc0);
        }
        return acc0 + acc1;
    }

    /// <summary>d_w · d_x of sixteen blocks: the f16 scales widened exactly (<see cref="HalfDot.F16ToF32"/>). Lanes
    /// past the row's last block (the next row's scales or the copy's zero padding) are widened too and never used.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Scales16(ushort* sc, float* dx) => HalfDot.F16ToF32(Vector256.Load(sc)) * Vector512.Load(dx);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> PairQ8_0(byte* w, sbyte* x, Vector512<float> scale, Vector512<short> ones, Vector512<float> acc)
    {
        // Built with vinserti64x4 from memory (Vector512.Create of two halves went through a stack slot).
        var wc = Avx512F.InsertVector256(Vector256.Load((sbyte*)(w + 2)).ToVector512Unsafe(), Vector256.Load((sbyte*)(w + 36)), 1);
        var xc = Vector512.Load(x);
        var sx = Vector512.ConditionalSelect(Vector512.LessThan(wc, Vector512<sbyte>.Zero), Vector512<sbyte>.Zero - xc, xc);
        var p32 = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Avx512BW.Abs(wc), sx), ones);
        return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(p32), scale, acc);
    }

    /// <summary>Q4_0 and Q5_0: four blocks per register (block k's 16 nibble bytes in 128-bit lane k); low nibbles
    /// (values 0-15) and high nibbles (16-31), with Q5_0's fifth bit or'ed in, meet x's codes as they are (unsigned
    /// 0-15 or 0-31), the -8 or -16 offset taken off in int32.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static Vector512<float> RowNibbles<TC>(byte* row, ushort* sc, int nbMain, sbyte* x, int* corr, float* dx) where TC : struct, INibbleCodes
    {
        var acc0 = Vector512<float>.Zero;
        var acc1 = Vector512<float>.Zero;
        var ones = Vector512.Create((short)1);
        var four = Vector512.Create(4);
        int ts = TC.Bytes;
        for (int g = 0; g < nbMain; g += 16)
        {
            // Quad j's lanes 4k..4k+3 take block 4j + k.
            var d = Scales16(sc + g, dx + g);
            var idx = Vector512.Create(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
            int quads = Math.Min(16, nbMain - g) / 4, q = 0;
            byte* w = row + ts * g;
            sbyte* xg = x + 32 * g;
            int* cg = corr + 4 * g;
            for (; q + 2 <= quads; q += 2, w += 8 * ts, xg += 256, cg += 32)
            {
                acc0 = Quad<TC>(w, xg, cg, Avx512F.PermuteVar16x32(d, idx), ones, acc0);
                idx += four;
                acc1 = Quad<TC>(w + 4 * ts, xg + 128, cg + 16, Avx512F.PermuteVar16x32(d, idx), ones, acc1);
                idx += four;
            }
            if (q < quads) acc0 = Quad<TC>(w, xg, cg, Avx512F.PermuteVar16x32(d, idx), ones, acc0);
        }
        return acc0 + acc1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Quad<TC>(byte* w, sbyte* x, int* corr, Vector512<float> scale, Vector512<short> ones, Vector512<float> acc)
        where TC : struct, INibbleCodes
    {
        TC.Codes(w, out var lo, out var hi);
        // Each 16-bit sum is at most 2 x 2 x 31 x 127 = 15748 in magnitude: the add cannot overflow.
        var p16 = Avx512BW.MultiplyAddAdjacent(lo, Vector512.Load(x)) + Avx512BW.MultiplyAddAdjacent(hi, Vector512.Load(x + 64));
        var p32 = Avx512BW.MultiplyAddAdjacent(p16, ones) - Vector512.Load(corr);
        return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(p32), scale, acc);
    }

    /// <summary>Four consecutive blocks of 16 nibble bytes: their codes as unsigned bytes, block k in 128-bit lane k.</summary>
    private interface INibbleCodes
    {
        static abstract int Bytes { get; }
        static abstract void Codes(byte* quad, out Vector512<byte> lo, out Vector512<byte> hi);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Nibbles(byte* q0, int stride, out Vector512<byte> lo, out Vector512<byte> hi)
    {
        var v = Vector128.Load(q0).ToVector256Unsafe().ToVector512Unsafe();
        v = Avx512F.InsertVector128(v, Vector128.Load(q0 + stride), 1);
        v = Avx512F.InsertVector128(v, Vector128.Load(q0 + 2 * stride), 2);
        v = Avx512F.InsertVector128(v, Vector128.Load(q0 + 3 * stride), 3);
        var m = Vector512.Create((byte)15);
        lo = v & m;
        hi = (v.AsUInt16() >> 4).AsByte() & m;
    }

    private readonly struct Q4Codes : INibbleCodes
    {
        public static int Bytes => 18;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Codes(byte* quad, out Vector512<byte> lo, out Vector512<byte> hi) => Nibbles(quad + 2, 18, out lo, out hi);
    }

    /// <summary>Q5_0 (d, 32 high bits, 16 nibble bytes): bit j of the high word is value j's fifth bit. Each block's word
    /// goes to its lane, a byte shuffle puts high-word byte j / 8 (low half) or 2 + j / 8 (high half) in byte j, and a
    /// test against 1 &lt;&lt; (j mod 8) sets 16.</summary>
    private readonly struct Q5Codes : INibbleCodes
    {
        public static int Bytes => 22;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Codes(byte* quad, out Vector512<byte> lo, out Vector512<byte> hi)
        {
            Nibbles(quad + 6, 22, out lo, out hi);
            var words = Vector128.Create(Unsafe.ReadUnaligned<uint>(quad + 2), Unsafe.ReadUnaligned<uint>(quad + 24),
                Unsafe.ReadUnaligned<uint>(quad + 46), Unsafe.ReadUnaligned<uint>(quad + 68));
            var qh = Avx512F.PermuteVar16x32(words.ToVector256Unsafe().ToVector512Unsafe(),
                Vector512.Create(0u, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3)).AsByte();
            // Per 128-bit lane: shuffle indices [0 x 8, 1 x 8] (low half) and [2 x 8, 3 x 8] (high half); bit masks
            // 1, 2, .., 128 repeated (each 8 bytes one little-endian ulong).
            const ulong b0 = 0, b1 = 0x0101010101010101, b2 = 2 * b1, b3 = 3 * b1;
            var lowBytes = Vector512.Create(b0, b1, b0, b1, b0, b1, b0, b1).AsByte();
            var highBytes = Vector512.Create(b2, b3, b2, b3, b2, b3, b2, b3).AsByte();
            var bits = Vector512.Create(0x8040201008040201UL).AsByte();
            var sixteen = Vector512.Create((byte)16);
            var bl = Avx512BW.Shuffle(qh, lowBytes) & bits;
            var bh = Avx512BW.Shuffle(qh, highBytes) & bits;
            lo |= Vector512.AndNot(sixteen, Vector512.Equals(bl, Vector512<byte>.Zero));
            hi |= Vector512.AndNot(sixteen, Vector512.Equals(bh, Vector512<byte>.Zero));
        }
    }

    /// <summary>Blocks [<paramref name="from"/>, <paramref name="nb"/>) (fewer than a pair or quad), scalar, x in value order.</summary>
    private static float Tail(GgmlType weight, byte* row, int from, int nb, sbyte* x, float* dx)
    {
        float sum = 0;
        int ts = GgmlTypeInfo.TypeSize(weight);
        for (int b = from; b < nb; b++)
        {
            byte* blk = row + b * ts;
            sbyte* xc = x + 32 * b;
            int isum = 0;
            for (int j = 0; j < 32; j++)
            {
                int code = weight switch
                {
                    GgmlType.Q8_0 => ((sbyte*)(blk + 2))[j],
                    GgmlType.Q4_0 => (j < 16 ? blk[2 + j] & 15 : blk[2 + j - 16] >> 4) - 8,
                    _ => ((j < 16 ? blk[6 + j] & 15 : blk[6 + j - 16] >> 4) | (int)((Unsafe.ReadUnaligned<uint>(blk + 2) >> j) & 1) << 4) - 16,
                };
                isum += code * xc[j];
            }
            sum += isum * (QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(blk)) * dx[b]);
        }
        return sum;
    }

    /// <summary>
    /// The lane sums of four vectors: element i of the result is Σ lanes of vector i. Each vector goes through the same
    /// additions whichever slot it takes ((l0 + l2) + (l1 + l3) over its four 128-bit quarters, then within the
    /// quarter), so a row's value does not depend on its neighbours.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        // Quarters: ab = [a0+a2, a1+a3, b0+b2, b1+b3], cd likewise.
        var ab = Avx512F.Shuffle4x128(a, b, 0b01_00_01_00) + Avx512F.Shuffle4x128(a, b, 0b11_10_11_10);
        var cd = Avx512F.Shuffle4x128(c, d, 0b01_00_01_00) + Avx512F.Shuffle4x128(c, d, 0b11_10_11_10);
        // [a, b, c, d] quarters, each the sum of its vector's quarters.
        var q = Avx512F.Shuffle4x128(ab, cd, 0b10_00_10_00) + Avx512F.Shuffle4x128(ab, cd, 0b11_01_11_01);
        // Within each quarter: (e0 + e2) + (e1 + e3) in every element.
        q += Avx512F.Permute4x32(q, 0b01_00_11_10);
        q += Avx512F.Permute4x32(q, 0b10_11_00_01);
        return Avx512F.PermuteVar16x32(q, Vector512.Create(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)).GetLower().GetLower();
    }
}
