using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Kvq.Tensors.Quant;

/// <summary>
/// Integer dot products of a weight row of 32-value blocks (Q8_0, Q4_0, IQ4_NL) with an activation row encoded as Q8_0
/// (<see cref="ActivationQuant"/>): per block Σ w_code · x_code in int32, then one multiply by d_w · d_x, as ggml's
/// vec_dot_*_q8_0 compute it. AVX-512BW takes two blocks per register (below); AVX2: the weight codes are unpacked to 32 signed bytes in a register, then vpmaddubsw
/// (|w| as unsigned times x with w's sign) and vpmaddwd with ones give eight int32 partial sums. No pair can saturate:
/// |w| &lt;= 128, |x| &lt;= 127. (.NET 10 exposes VNNI only as the VEX AvxVnni, which the AMD EPYC of this project's
/// machine lacks; AVX-512 VNNI has no API, so the AVX2 sequence is the one used.) Other weight types take the activation
/// rounding through <see cref="ActivationQuant.RoundTrip"/> and their float kernels.
/// </summary>
public static unsafe class Q8Dot
{
    /// <summary>
    /// Whether <see cref="WeightMatrix"/> uses these kernels by default where <see cref="Int8MatVec"/> does not apply
    /// (Q8_0, Q4_0 and Q5_0 products with AVX-512BW take that one: activations prepared once per product, scales widened 16 at
    /// a time, ~2x faster than either path here). With AVX-512 the float kernels over the
    /// round-tripped row (<see cref="ActivationQuant.RoundTrip"/>) measured as fast or faster (one 2048x2048 MatVec on one
    /// thread of the AMD EPYC, best of 40: Q8_0 0.23 vs 0.31 ms, Q4_0 0.30 vs 0.30, IQ4_NL 0.29 vs 0.31): widening bytes
    /// to 16 float lanes is cheap there, while the integer path pays for the per-block f16 scales in scalar code. Below
    /// AVX-512 the integer kernels are used, as ggml does on AVX2 (not measured on such a machine here).
    /// </summary>
    public static bool Preferred => !Avx512QuantLanes.IsSupported;

    /// <summary>Whether <paramref name="weight"/> rows have an integer kernel here (on any machine: the scalar one).</summary>
    public static bool Handles(GgmlType weight) => weight is GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.IQ4_NL;

    /// <summary>Σ over <paramref name="nb"/> blocks of (d_w · d_x) · Σ codes, on the widest path this machine has.</summary>
    public static float Dot(GgmlType weight, byte* w, byte* x, int nb)
    {
        if (Avx512BW.IsSupported && Vector512.IsHardwareAccelerated)
            return weight switch
            {
                GgmlType.Q8_0 => DotAvx512<Q8_0Codes>(w, x, nb),
                GgmlType.Q4_0 => DotAvx512<Q4_0Codes>(w, x, nb),
                GgmlType.IQ4_NL => DotAvx512<Iq4NlCodes>(w, x, nb),
                _ => throw Unsupported(weight),
            };
        return DotAvx2OrScalar(weight, w, x, nb);
    }

    /// <summary>The AVX2 kernels (or the scalar reference without AVX2): what <see cref="Dot"/> runs below AVX-512.</summary>
    public static float DotAvx2OrScalar(GgmlType weight, byte* w, byte* x, int nb)
    {
        if (Avx2.IsSupported && Fma.IsSupported)
            return weight switch
            {
                GgmlType.Q8_0 => DotAvx2<Q8_0Codes>(w, x, nb),
                GgmlType.Q4_0 => DotAvx2<Q4_0Codes>(w, x, nb),
                GgmlType.IQ4_NL => DotAvx2<Iq4NlCodes>(w, x, nb),
                _ => throw Unsupported(weight),
            };
        return DotScalar(weight, w, x, nb);
    }

    /// <summary>The scalar reference: integer sums per block, then the scale, in block order.</summary>
    public static float DotScalar(GgmlType weight, byte* w, byte* x, int nb)
    {
        if (!Handles(weight)) throw Unsupported(weight);
        int ts = GgmlTypeInfo.TypeSize(weight);
        var levels = QuantFormats.Iq4Levels;
        float sum = 0;
        for (int i = 0; i < nb; i++, w += ts, x += 34)
        {
            sbyte* xq = (sbyte*)(x + 2);
            int isum = 0;
            for (int j = 0; j < 32; j++)
            {
                int code = weight switch
                {
                    GgmlType.Q8_0 => ((sbyte*)(w + 2))[j],
                    GgmlType.Q4_0 => (j < 16 ? w[2 + j] & 15 : w[2 + j - 16] >> 4) - 8,
                    _ => levels[j < 16 ? w[2 + j] & 15 : w[2 + j - 16] >> 4],
                };
                isum += code * xq[j];
            }
            sum += isum * (F16(w) * F16(x));
        }
        return sum;
    }

    /// <summary>
    /// Q8_0 weights dotted with a Q8_0 activation row in ggml-cpu's own order of float operations, so that the result is
    /// bitwise what llama.cpp's CPU backend computes (its vec_dot_q8_0_q8_0 for one row and llamafile's tinyBLAS_Q0 tiles
    /// for prompt batches sum alike): eight int32 lanes per block (lane i = codes 4i..4i+3), one accumulator over the
    /// blocks in order, acc = fma(d_w · d_x, lanes, acc), then the lanes summed as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
    /// Checked bit for bit against the libggml-cpu LLamaSharp loads (tests) and on llama.cpp's own graph (docs/models.md).
    /// One dependent FMA chain per row, so slower than <see cref="Dot"/>; <see cref="WeightMatrix.LlamaCppSumOrder"/>
    /// chooses it.
    /// </summary>
    public static float DotQ8_0LlamaCppOrder(byte* w, byte* x, int nb)
    {
        if (!Avx2.IsSupported || !Fma.IsSupported) return DotQ8_0LlamaCppOrderScalar(w, x, nb);
        var acc = Vector256<float>.Zero;
        for (int i = 0; i < nb; i++, w += 34, x += 34)
            acc = Fma.MultiplyAdd(Vector256.Create(F16(w) * F16(x)), Block<Q8_0Codes>(w, x), acc);
        var r = acc.GetUpper() + acc.GetLower();
        return (r.GetElement(0) + r.GetElement(2)) + (r.GetElement(1) + r.GetElement(3));
    }

    /// <summary>Scalar twin of <see cref="DotQ8_0LlamaCppOrder"/> (the reference its AVX2 form is tested against).</summary>
    public static float DotQ8_0LlamaCppOrderScalar(byte* w, byte* x, int nb)
    {
        Span<float> acc = stackalloc float[8];
        acc.Clear();
        for (int i = 0; i < nb; i++, w += 34, x += 34)
        {
            float d = F16(w) * F16(x);
            sbyte* wc = (sbyte*)(w + 2), xc = (sbyte*)(x + 2);
            for (int lane = 0; lane < 8; lane++)
            {
                int s = 0;
                for (int j = 4 * lane; j < 4 * lane + 4; j++) s += wc[j] * xc[j];
                acc[lane] = MathF.FusedMultiplyAdd(d, s, acc[lane]);
            }
        }
        return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotAvx2<TC>(byte* w, byte* x, int nb) where TC : struct, IBlockCodes
    {
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        int ts = TC.Bytes, i = 0;
        // Two blocks per step on independent accumulators, so one block's FMA does not wait on the previous one.
        for (; i + 2 <= nb; i += 2, w += 2 * ts, x += 68)
        {
            acc0 = Fma.MultiplyAdd(Block<TC>(w, x), Vector256.Create(F16(w) * F16(x)), acc0);
            acc1 = Fma.MultiplyAdd(Block<TC>(w + ts, x + 34), Vector256.Create(F16(w + ts) * F16(x + 34)), acc1);
        }
        if (i < nb) acc0 = Fma.MultiplyAdd(Block<TC>(w, x), Vector256.Create(F16(w) * F16(x)), acc0);
        return Vector256.Sum(acc0 + acc1);
    }

    /// <summary>AVX-512BW: two blocks per 512-bit register (lanes 0-7 hold block i's partial sums, 8-15 block i+1's).
    /// vpsignb has no 512-bit form, so x takes w's sign by a masked negation.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotAvx512<TC>(byte* w, byte* x, int nb) where TC : struct, IBlockCodes
    {
        var acc = Vector512<float>.Zero;
        var ones = Vector512.Create((short)1);
        int ts = TC.Bytes, i = 0;
        for (; i + 2 <= nb; i += 2, w += 2 * ts, x += 68)
        {
            var wc = Vector512.Create(TC.Codes(w), TC.Codes(w + ts));
            var xc = Vector512.Create(Vector256.Load((sbyte*)(x + 2)), Vector256.Load((sbyte*)(x + 36)));
            var sx = Vector512.ConditionalSelect(Vector512.LessThan(wc, Vector512<sbyte>.Zero), Vector512<sbyte>.Zero - xc, xc);
            var p32 = Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Avx512BW.Abs(wc), sx), ones);
            var d = Vector512.Create(Vector256.Create(F16(w) * F16(x)), Vector256.Create(F16(w + ts) * F16(x + 34)));
            acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(p32), d, acc);
        }
        float sum = Vector512.Sum(acc);
        if (i < nb) sum += DotAvx2OrScalar(TC.Type, w, x, 1);
        return sum;
    }

    /// <summary>Eight int32 partial sums of one block's 32 code products, as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Block<TC>(byte* w, byte* x) where TC : struct, IBlockCodes
    {
        var wc = TC.Codes(w);
        var xc = Vector256.Load((sbyte*)(x + 2));
        var p16 = Avx2.MultiplyAddAdjacent(Avx2.Abs(wc), Avx2.Sign(xc, wc));
        return Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(p16, Vector256.Create((short)1)));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float F16(byte* p) => QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(p));

    private static NotSupportedException Unsupported(GgmlType t) => new($"no integer Q8_0 dot for {t} weights");

    /// <summary>A 32-value weight block: its size and its codes as 32 signed bytes in value order.</summary>
    private interface IBlockCodes
    {
        static abstract int Bytes { get; }
        static abstract GgmlType Type { get; }
        static abstract Vector256<sbyte> Codes(byte* block);
    }

    private readonly struct Q8_0Codes : IBlockCodes
    {
        public static int Bytes => 34;
        public static GgmlType Type => GgmlType.Q8_0;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<sbyte> Codes(byte* b) => Vector256.Load((sbyte*)(b + 2));
    }

    /// <summary>Low nibbles are values 0-15, high nibbles 16-31.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Nibbles(byte* qs)
    {
        var v = Vector128.Load(qs);
        var m = Vector128.Create((byte)15);
        return Vector256.Create(v & m, Vector128.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & m);
    }

    private readonly struct Q4_0Codes : IBlockCodes
    {
        public static int Bytes => 18;
        public static GgmlType Type => GgmlType.Q4_0;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<sbyte> Codes(byte* b) => Nibbles(b + 2).AsSByte() - Vector256.Create((sbyte)8);
    }

    private readonly struct Iq4NlCodes : IBlockCodes
    {
        public static int Bytes => 18;
        public static GgmlType Type => GgmlType.IQ4_NL;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<sbyte> Codes(byte* b)
        {
            var levels = Vector128.Create((sbyte)-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
            // vpshufb looks up within each 128-bit lane, so both lanes hold the table.
            return Avx2.Shuffle(Vector256.Create(levels, levels), Nibbles(b + 2).AsSByte());
        }
    }
}
