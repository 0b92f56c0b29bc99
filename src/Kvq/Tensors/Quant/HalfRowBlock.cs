using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kvq.Tensors.Quant;

/// <summary>
/// f16 weight rows against many activation vectors, each result bitwise equal to <see cref="HalfDot.Dot"/> of that
/// row and vector, as the lone matrix-vector product computes it. Used by <see cref="WeightMatrix.MatVecRows"/> for the
/// serving engine's decode rows, so batching never changes a sequence's tokens.
/// <para>
/// How the order is kept: the lone dot (AVX-512) has two 16-lane accumulators, acc0 over the column chunks
/// [0,16), [32,48), ... (plus a last odd chunk), acc1 over [16,32), [48,64), ...; then Sum(acc0 + acc1), then the
/// scalar tail. Each accumulator is an independent chain, so here a block of 4 rows x 4 vectors first runs every
/// acc0 chain (16 registers), parks them in scratch, then every acc1 chain (16 registers), and finishes each output
/// with the same Sum and tail: the same operations on the same values in the same order per output. Rows are
/// converted from f16 once per step into scratch (exact, so the same floats). Per 16 columns a pass loads 4 weight
/// and 4 activation vectors for 16 FMAs (the 2 x 4 kernel before it: 12 loads per 16 FMAs, converted rows of 2 only).
/// The AVX2 twin (CPUs without AVX-512: 16 ymm registers) follows <see cref="HalfDot.DotAvx2"/>'s order with 8-lane
/// chunks in 2 x 4 blocks. <see cref="Reference"/> is the scalar statement of the contract for tests.
/// </para>
/// </summary>
public static unsafe class HalfRowBlock
{
    /// <summary>Whether <see cref="Rows"/> runs here (else callers use <see cref="HalfDot.DotMany"/>).</summary>
    public static bool Supported(int k) => (Avx512F.IsSupported && k >= 16) || (Avx2.IsSupported && Fma.IsSupported && k >= 8);

    /// <summary>Floats of scratch <see cref="Rows"/> needs for rows of <paramref name="k"/> values.</summary>
    public static int ScratchFloats(int k) => 4 * k + ParkedFloats + 16;

    /// <summary>16 parked 16-lane accumulators (the AVX2 path parks 8 of 8 lanes).</summary>
    private const int ParkedFloats = 16 * 16;

    /// <summary>y[t * yStride + r] = row r (of <paramref name="rows"/>, <paramref name="k"/> halves each, rows
    /// <paramref name="rowStride"/> bytes apart) . x[t] (x rows <paramref name="k"/> floats apart) for t in [0, n);
    /// <paramref name="scratch"/> holds <see cref="ScratchFloats"/>(k) floats; <paramref name="finite"/>: no row holds
    /// an inf or NaN (<see cref="HalfDot.AllFinite"/>), which allows the cheaper exact widening (the same floats).</summary>
    public static void Rows(byte* w, long rowStride, int rows, int k, float* x, int n, float* y, int yStride, Span<float> scratch,
        bool finite = false)
    {
        if (scratch.Length < ScratchFloats(k)) throw new ArgumentException($"HalfRowBlock: scratch of {scratch.Length} floats, {ScratchFloats(k)} needed");
        if (Avx512F.IsSupported && k >= 16) Blocks(w, rowStride, rows, k, x, n, y, yStride, scratch, finite, wide: true);
        else if (Avx2.IsSupported && Fma.IsSupported && k >= 8) Blocks(w, rowStride, rows, k, x, n, y, yStride, scratch, finite, wide: false);
        else
            for (int r = 0; r < rows; r++) HalfDot.DotMany(new ReadOnlySpan<Half>(w + r * rowStride, k), x, k, n, y + r, yStride);
    }

    /// <summary>Test hook: <see cref="Rows"/>'s AVX2 path on a CPU that also has AVX-512 (where <see cref="Rows"/>
    /// takes the wide one); its results equal <see cref="HalfDot.DotAvx2"/>'s.</summary>
    internal static void RowsAvx2(byte* w, long rowStride, int rows, int k, float* x, int n, float* y, int yStride, Span<float> scratch)
    {
        if (!(Avx2.IsSupported && Fma.IsSupported) || k < 8) throw new PlatformNotSupportedException("AVX2 + FMA and k >= 8 needed");
        Blocks(w, rowStride, rows, k, x, n, y, yStride, scratch, finite: false, wide: false);
    }

    /// <summary>Blocks of 4 rows (AVX-512) or 2 (AVX2), each converted once into scratch, against all n vectors; the
    /// last rows of an odd piece one at a time, also converted.</summary>
    private static void Blocks(byte* w, long rowStride, int rows, int k, float* x, int n, float* y, int yStride, Span<float> scratch,
        bool finite, bool wide)
    {
        int block = wide ? 4 : 2;
        fixed (float* buf = scratch)
        {
            // Rows start on a cache line when k is a multiple of 16 (16 spare floats): a 64-byte load that straddles two
            // lines costs two.
            float* f = (float*)(((nint)buf + 63) & ~(nint)63), parked = f + 4 * k;
            for (int r = 0; r < rows; r += block)
            {
                int m = Math.Min(block, rows - r);
                for (int i = 0; i < m; i++)
                    HalfDot.ToSingle(new ReadOnlySpan<Half>(w + (r + i) * rowStride, k), new Span<float>(f + i * k, k), finite && wide);
                if (PrefetchNextRows && n >= 4)
                {
                    // The first block asks for the next PrefetchRowBlocks blocks, each later one for the block that
                    // many ahead (the nearer ones were asked for already).
                    int ahead = PrefetchRowBlocks;
                    for (int i = r == 0 ? block : r + ahead * block; i < Math.Min(rows, r + (ahead + 1) * block); i++)
                        PrefetchRow(w + i * rowStride, 2 * k);
                }
                if (m < block)
                    for (int i = 0; i < m; i++)
                        for (int t = 0; t < n; t++)
                            y[(long)t * yStride + r + i] = wide ? Dot1(f + i * k, x + (long)t * k, k) : Dot1Avx2(f + i * k, x + (long)t * k, k);
                else if (wide) Block512(f, k, x, n, y + r, yStride, parked);
                else Block256(f, k, x, n, y + r, yStride, parked);
            }
        }
    }

    /// <summary>Whether <see cref="Blocks"/> asks for the next block's f16 rows (into L2) before the panels of the current
    /// one: a batched step streams every weight from memory (31 MB for books-19m, more than the L3 keeps beside the KV
    /// blocks), and between two blocks' conversions the panels run ~1,500 cycles without touching the weights, so the
    /// hardware prefetcher, which follows demand misses, has stopped by the time the next rows are read. Results do not
    /// depend on it (a switch for the benchmarks' A/B: <c>bench/Kvq.Micro --batch-profile</c>).</summary>
    internal static bool PrefetchNextRows = true;

    /// <summary>How many blocks ahead <see cref="Blocks"/> asks for f16 rows (1: the next block only, as branch
    /// batchdec did). A block's panels at 16 vectors run ~2,000 cycles; one block ahead leaves a prefetch that long to
    /// come from memory, which a loaded memory system (the KV blocks of 16 sequences stream beside the weights) does
    /// not always meet. Results do not depend on it (<c>bench/Kvq.Micro --batch-profile</c>, <c>KVQ_AB=prefetch</c>).</summary>
    internal static int PrefetchRowBlocks = 2;

    private static void PrefetchRow(byte* p, int bytes)
    {
        if (!Sse.IsSupported) return;
        for (int i = 0; i < bytes; i += 64) Sse.Prefetch1(p + i);
    }

    /// <summary>The scalar statement of what <see cref="Rows"/> (and the lone dot) computes for one output: lane l of
    /// acc0 sums w[c]x[c] over c = l, l+32, l+64, ... (then c in an odd last chunk), acc1 over c = 16+l, 48+l, ...,
    /// each with a fused multiply-add; then the lanes of acc0 + acc1 in a pairwise tree ((s0+s1)+(s2+s3)) + ... (the
    /// order of <see cref="Vector512.Sum{T}"/> on this runtime) and the plain tail. <paramref name="lanes"/> 8 states
    /// the AVX2 order (<see cref="HalfDot.DotAvx2"/>).</summary>
    public static float Reference(ReadOnlySpan<float> w, ReadOnlySpan<float> x, int lanes = 16)
    {
        int k = w.Length, pair = 2 * lanes;
        Span<float> acc0 = stackalloc float[lanes], acc1 = stackalloc float[lanes];
        acc0.Clear(); acc1.Clear();
        int i = 0;
        for (; i + pair <= k; i += pair)
            for (int l = 0; l < lanes; l++)
            {
                acc0[l] = MathF.FusedMultiplyAdd(w[i + l], x[i + l], acc0[l]);
                acc1[l] = MathF.FusedMultiplyAdd(w[i + lanes + l], x[i + lanes + l], acc1[l]);
            }
        if (i + lanes <= k)
        {
            for (int l = 0; l < lanes; l++) acc0[l] = MathF.FusedMultiplyAdd(w[i + l], x[i + l], acc0[l]);
            i += lanes;
        }
        for (int l = 0; l < lanes; l++) acc0[l] += acc1[l];
        for (int width = 1; width < lanes; width *= 2) // pairwise: neighbours, then pairs of pairs, ...
            for (int l = 0; l < lanes; l += 2 * width) acc0[l] += acc0[l + width];
        float s = acc0[0];
        for (; i < k; i++) s += w[i] * x[i];
        return s;
    }

    /// <summary>4 converted rows (<paramref name="f"/>, k floats apart) against all n vectors: 4 x 4 panels, then
    /// single vectors for the last n % 4.</summary>
    private static void Block512(float* f, int k, float* x, int n, float* y, int yStride, float* parked)
    {
        int t = 0;
        for (; t + 4 <= n; t += 4) Panel4x4(f, k, x + (long)t * k, y + (long)t * yStride, yStride, parked);
        for (; t < n; t++)
            for (int i = 0; i < 4; i++) y[(long)t * yStride + i] = Dot1(f + i * k, x + (long)t * k, k);
    }

    /// <summary>4 rows x 4 vectors: the acc0 chains of all 16 outputs, parked, then the acc1 chains, then each output's
    /// Sum(acc0 + acc1) and tail. Results to y[t * yStride + r].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Panel4x4(float* w, int k, float* x, float* y, int yStride, float* parked)
    {
        float* w0 = w, w1 = w + k, w2 = w + 2 * k, w3 = w + 3 * k;
        float* x0 = x, x1 = x + k, x2 = x + 2 * k, x3 = x + 3 * k;
        int k32 = k & ~31;
        int end = k - k32 >= 16 ? k32 + 16 : k32; // the acc0 pass also takes the odd last chunk
        for (int pass = 0; pass < 2; pass++)
        {
            Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
            Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
            Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
            Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
            int limit = pass == 0 ? end : k32;
            for (int i = 16 * pass; i < limit; i += 32)
            {
                var a0 = Vector512.Load(w0 + i); var a1 = Vector512.Load(w1 + i);
                var a2 = Vector512.Load(w2 + i); var a3 = Vector512.Load(w3 + i);
                var v = Vector512.Load(x0 + i);
                c00 = Avx512F.FusedMultiplyAdd(a0, v, c00); c10 = Avx512F.FusedMultiplyAdd(a1, v, c10);
                c20 = Avx512F.FusedMultiplyAdd(a2, v, c20); c30 = Avx512F.FusedMultiplyAdd(a3, v, c30);
                v = Vector512.Load(x1 + i);
                c01 = Avx512F.FusedMultiplyAdd(a0, v, c01); c11 = Avx512F.FusedMultiplyAdd(a1, v, c11);
                c21 = Avx512F.FusedMultiplyAdd(a2, v, c21); c31 = Avx512F.FusedMultiplyAdd(a3, v, c31);
                v = Vector512.Load(x2 + i);
                c02 = Avx512F.FusedMultiplyAdd(a0, v, c02); c12 = Avx512F.FusedMultiplyAdd(a1, v, c12);
                c22 = Avx512F.FusedMultiplyAdd(a2, v, c22); c32 = Avx512F.FusedMultiplyAdd(a3, v, c32);
                v = Vector512.Load(x3 + i);
                c03 = Avx512F.FusedMultiplyAdd(a0, v, c03); c13 = Avx512F.FusedMultiplyAdd(a1, v, c13);
                c23 = Avx512F.FusedMultiplyAdd(a2, v, c23); c33 = Avx512F.FusedMultiplyAdd(a3, v, c33);
            }
            if (pass == 0)
            {
                c00.Store(parked); c01.Store(parked + 16); c02.Store(parked + 32); c03.Store(parked + 48);
                c10.Store(parked + 64); c11.Store(parked + 80); c12.Store(parked + 96); c13.Store(parked + 112);
                c20.Store(parked + 128); c21.Store(parked + 144); c22.Store(parked + 160); c23.Store(parked + 176);
                c30.Store(parked + 192); c31.Store(parked + 208); c32.Store(parked + 224); c33.Store(parked + 240);
                continue;
            }
            if (end == k)
            {
                // No scalar tail (k a multiple of 16): the 16 horizontal sums at once, lane 4t + r = output (r, t).
                var sums = Sum16(
                    c00 + Vector512.Load(parked), c10 + Vector512.Load(parked + 64), c20 + Vector512.Load(parked + 128), c30 + Vector512.Load(parked + 192),
                    c01 + Vector512.Load(parked + 16), c11 + Vector512.Load(parked + 80), c21 + Vector512.Load(parked + 144), c31 + Vector512.Load(parked + 208),
                    c02 + Vector512.Load(parked + 32), c12 + Vector512.Load(parked + 96), c22 + Vector512.Load(parked + 160), c32 + Vector512.Load(parked + 224),
                    c03 + Vector512.Load(parked + 48), c13 + Vector512.Load(parked + 112), c23 + Vector512.Load(parked + 176), c33 + Vector512.Load(parked + 240));
                sums.GetLower().GetLower().Store(y);
                sums.GetLower().GetUpper().Store(y + yStride);
                sums.GetUpper().GetLower().Store(y + 2L * yStride);
                sums.GetUpper().GetUpper().Store(y + 3L * yStride);
                return;
            }
            // Output (row r, vector t): its acc0 is parked[(4r + t) * 16], its acc1 the register crt.
            float* yr = y;
            yr[0] = Finish512(parked, c00, w0, x0, end, k); yr[yStride] = Finish512(parked + 16, c01, w0, x1, end, k);
            yr[2L * yStride] = Finish512(parked + 32, c02, w0, x2, end, k); yr[3L * yStride] = Finish512(parked + 48, c03, w0, x3, end, k);
            yr = y + 1;
            yr[0] = Finish512(parked + 64, c10, w1, x0, end, k); yr[yStride] = Finish512(parked + 80, c11, w1, x1, end, k);
            yr[2L * yStride] = Finish512(parked + 96, c12, w1, x2, end, k); yr[3L * yStride] = Finish512(parked + 112, c13, w1, x3, end, k);
            yr = y + 2;
            yr[0] = Finish512(parked + 128, c20, w2, x0, end, k); yr[yStride] = Finish512(parked + 144, c21, w2, x1, end, k);
            yr[2L * yStride] = Finish512(parked + 160, c22, w2, x2, end, k); yr[3L * yStride] = Finish512(parked + 176, c23, w2, x3, end, k);
            yr = y + 3;
            yr[0] = Finish512(parked + 192, c30, w3, x0, end, k); yr[yStride] = Finish512(parked + 208, c31, w3, x1, end, k);
            yr[2L * yStride] = Finish512(parked + 224, c32, w3, x2, end, k); yr[3L * yStride] = Finish512(parked + 240, c33, w3, x3, end, k);
        }
    }

    /// <summary>
    /// Lane j = the horizontal sum of v_j, in <see cref="Vector512.Sum{T}"/>'s own tree (as the JIT emits it for
    /// AVX-512: adjacent pairs, then pairs of pairs, then 128-bit halves of each 256-bit half, then the two halves:
    /// ((a0+a1)+(a2+a3)) + ((a4+a5)+(a6+a7)) + ...), so each lane is bitwise what Sum(v_j) gives (float addition
    /// commutes exactly; <see cref="Reference"/> states the tree and the tests hold both to it). 45 shuffles and adds
    /// for 16 sums instead of ~26 dependent instructions per sum: at k = 384 the sums were ~40% of a panel.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Sum16(Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3,
        Vector512<float> v4, Vector512<float> v5, Vector512<float> v6, Vector512<float> v7,
        Vector512<float> v8, Vector512<float> v9, Vector512<float> v10, Vector512<float> v11,
        Vector512<float> v12, Vector512<float> v13, Vector512<float> v14, Vector512<float> v15)
    {
        // Pairs(a, b), per 128-bit block: [a0+a1, a2+a3, b0+b1, b2+b3]; twice gives each block's 4-sum of 4 vectors.
        var q0 = Pairs(Pairs(v0, v1), Pairs(v2, v3));
        var q1 = Pairs(Pairs(v4, v5), Pairs(v6, v7));
        var q2 = Pairs(Pairs(v8, v9), Pairs(v10, v11));
        var q3 = Pairs(Pairs(v12, v13), Pairs(v14, v15));
        // Halves(a, b) = [a.b0 + a.b1, a.b2 + a.b3, b.b0 + b.b1, b.b2 + b.b3] over 128-bit blocks.
        return Halves(Halves(q0, q1), Halves(q2, q3));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Pairs(Vector512<float> a, Vector512<float> b) =>
        Avx512F.Shuffle(a, b, 0x88) + Avx512F.Shuffle(a, b, 0xDD);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Halves(Vector512<float> a, Vector512<float> b) =>
        Avx512F.Shuffle4x128(a, b, 0x88) + Avx512F.Shuffle4x128(a, b, 0xDD);

    /// <summary>Sum(acc0 + acc1) and the scalar tail [from, k), as <see cref="HalfDot"/>'s dot ends.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish512(float* acc0, Vector512<float> acc1, float* w, float* x, int from, int k)
    {
        float s = Vector512.Sum(Vector512.Load(acc0) + acc1);
        for (int i = from; i < k; i++) s += w[i] * x[i];
        return s;
    }

    /// <summary><see cref="HalfDot"/>'s AVX-512 dot on an already converted row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot1(float* w, float* x, int n)
    {
        var acc0 = Vector512<float>.Zero;
        var acc1 = Vector512<float>.Zero;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            acc0 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), acc0);
            acc1 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i + 16), Vector512.Load(x + i + 16), acc1);
        }
        for (; i + 16 <= n; i += 16) acc0 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), acc0);
        float s = Vector512.Sum(acc0 + acc1);
        for (; i < n; i++) s += w[i] * x[i];
        return s;
    }

    /// <summary>AVX2: 2 converted rows against all n vectors in 2 x 4 panels (8 + 2 + 1 of the 16 ymm registers), then
    /// <see cref="HalfDot.DotAvx2"/>'s order on the converted rows for the last n % 4.</summary>
    private static void Block256(float* f, int k, float* x, int n, float* y, int yStride, float* parked)
    {
        int t = 0;
        for (; t + 4 <= n; t += 4) Panel2x4Avx2(f, k, x + (long)t * k, y + (long)t * yStride, yStride, parked);
        for (; t < n; t++)
            for (int i = 0; i < 2; i++) y[(long)t * yStride + i] = Dot1Avx2(f + i * k, x + (long)t * k, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Panel2x4Avx2(float* w, int k, float* x, float* y, int yStride, float* parked)
    {
        float* w0 = w, w1 = w + k;
        float* x0 = x, x1 = x + k, x2 = x + 2 * k, x3 = x + 3 * k;
        int k16 = k & ~15;
        int end = k - k16 >= 8 ? k16 + 8 : k16;
        for (int pass = 0; pass < 2; pass++)
        {
            Vector256<float> c00 = default, c01 = default, c02 = default, c03 = default;
            Vector256<float> c10 = default, c11 = default, c12 = default, c13 = default;
            int limit = pass == 0 ? end : k16;
            for (int i = 8 * pass; i < limit; i += 16)
            {
                var a0 = Vector256.Load(w0 + i); var a1 = Vector256.Load(w1 + i);
                var v = Vector256.Load(x0 + i);
                c00 = Fma.MultiplyAdd(a0, v, c00); c10 = Fma.MultiplyAdd(a1, v, c10);
                v = Vector256.Load(x1 + i);
                c01 = Fma.MultiplyAdd(a0, v, c01); c11 = Fma.MultiplyAdd(a1, v, c11);
                v = Vector256.Load(x2 + i);
                c02 = Fma.MultiplyAdd(a0, v, c02); c12 = Fma.MultiplyAdd(a1, v, c12);
                v = Vector256.Load(x3 + i);
                c03 = Fma.MultiplyAdd(a0, v, c03); c13 = Fma.MultiplyAdd(a1, v, c13);
            }
            if (pass == 0)
            {
                c00.Store(parked); c01.Store(parked + 8); c02.Store(parked + 16); c03.Store(parked + 24);
                c10.Store(parked + 32); c11.Store(parked + 40); c12.Store(parked + 48); c13.Store(parked + 56);
                continue;
            }
            y[0] = Finish256(parked, c00, w0, x0, end, k); y[yStride] = Finish256(parked + 8, c01, w0, x1, end, k);
            y[2L * yStride] = Finish256(parked + 16, c02, w0, x2, end, k); y[3L * yStride] = Finish256(parked + 24, c03, w0, x3, end, k);
            y[1] = Finish256(parked + 32, c10, w1, x0, end, k); y[yStride + 1] = Finish256(parked + 40, c11, w1, x1, end, k);
            y[2L * yStride + 1] = Finish256(parked + 48, c12, w1, x2, end, k); y[3L * yStride + 1] = Finish256(parked + 56, c13, w1, x3, end, k);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Finish256(float* acc0, Vector256<float> acc1, float* w, float* x, int from, int k)
    {
        float s = Vector256.Sum(Vector256.Load(acc0) + acc1);
        for (int i = from; i < k; i++) s += w[i] * x[i];
        return s;
    }

    /// <summary><see cref="HalfDot.DotAvx2"/> on an already converted row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Dot1Avx2(float* w, float* x, int n)
    {
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            acc0 = Fma.MultiplyAdd(Vector256.Load(w + i), Vector256.Load(x + i), acc0);
            acc1 = Fma.MultiplyAdd(Vector256.Load(w + i + 8), Vector256.Load(x + i + 8), acc1);
        }
        for (; i + 8 <= n; i += 8) acc0 = Fma.MultiplyAdd(Vector256.Load(w + i), Vector256.Load(x + i), acc0);
        float s = Vector256.Sum(acc0 + acc1);
        for (; i < n; i++) s += w[i] * x[i];
        return s;
    }
}
