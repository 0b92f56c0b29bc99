using System.Runtime.CompilerServices;

namespace Kvq.Tensors.Quant;

// The non-linear 4-bit formats (ggml's IQ4_NL and IQ4_XS): a 4-bit code does not stand for an evenly spaced level but
// indexes a fixed table of 16 signed levels, denser near zero where most weights are. No imatrix is needed to make them,
// so published GGUFs use them often. Written from ggml-common.h's block structs and the levels table (format data, not
// code); the decoders follow ggml's dequantize_row_iq4_* step by step, so every value is bit-identical (every product
// is exact in f32 anyway: an 11-bit f16 mantissa times a 6-bit scale times a 7-bit level fits 24 bits).
public static unsafe partial class QuantFormats
{
    /// <summary>The 16 levels a 4-bit IQ4 code stands for (ggml's kvalues_iq4nl).</summary>
    internal static ReadOnlySpan<sbyte> Iq4Levels => [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

    // IQ4_NL, 18 bytes: d f16 @0, qs[16] @2. Value j (0..15) = d * levels[qs[j] & 15], value j+16 = d * levels[qs[j] >> 4]
    // (the nibble order of Q4_0).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeIq4Nl(byte* s, float* y, int nb)
    {
        var levels = Iq4Levels;
        for (int i = 0; i < nb; i++, s += 18, y += 32)
        {
            float d = F16(s);
            byte* qs = s + 2;
            for (int j = 0; j < 16; j++)
            {
                y[j] = d * levels[qs[j] & 0xF];
                y[j + 16] = d * levels[qs[j] >> 4];
            }
        }
    }

    /// <summary>
    /// The 6-bit scale of 32-value sub-block <paramref name="ib"/> (0..7) of an IQ4_XS super-block, minus its bias 32:
    /// low 4 bits in nibble ib % 2 of scales_l[ib / 2], high 2 bits in bits 2ib, 2ib+1 of scales_h.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Iq4XsScale(int ib, ushort scalesH, byte* scalesL) =>
        (((scalesL[ib >> 1] >> (4 * (ib & 1))) & 0xF) | (((scalesH >> (2 * ib)) & 3) << 4)) - 32;

    // IQ4_XS, 136 bytes: d f16 @0, scales_h u16 @2, scales_l[4] @4, qs[128] @8. Eight sub-blocks of 32 values, sub-block
    // ib reads qs[16ib .. 16ib+16) in IQ4_NL's nibble order with the scale dl = d * (ls - 32).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void DequantizeIq4Xs(byte* s, float* y, int nb)
    {
        var levels = Iq4Levels;
        for (int i = 0; i < nb; i++, s += 136)
        {
            float d = F16(s);
            ushort sh = Unsafe.ReadUnaligned<ushort>(s + 2);
            byte* qs = s + 8;
            for (int ib = 0; ib < 8; ib++, qs += 16, y += 32)
            {
                float dl = d * Iq4XsScale(ib, sh, s + 4);
                for (int j = 0; j < 16; j++)
                {
                    y[j] = dl * levels[qs[j] & 0xF];
                    y[j + 16] = dl * levels[qs[j] >> 4];
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotIq4Nl<TV, TL>(byte* s, float* x, int nb) where TV : struct where TL : IQuantLanes<TV>
    {
        TV acc0 = TL.Zero, acc1 = TL.Zero;
        int i = 0;
        for (; i + 2 <= nb; i += 2, s += 36, x += 64)
        {
            acc0 = TL.Fma(BlockIq4<TV, TL>(s + 2, x), TL.Broadcast(F16(s)), acc0);
            acc1 = TL.Fma(BlockIq4<TV, TL>(s + 20, x + 32), TL.Broadcast(F16(s + 18)), acc1);
        }
        if (i < nb) acc0 = TL.Fma(BlockIq4<TV, TL>(s + 2, x), TL.Broadcast(F16(s)), acc0);
        return TL.Sum(TL.Add(acc0, acc1));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotIq4Xs<TV, TL>(byte* s, float* x, int nb) where TV : struct where TL : IQuantLanes<TV>
    {
        TV acc0 = TL.Zero, acc1 = TL.Zero;
        for (int i = 0; i < nb; i++, s += 136)
        {
            float d = F16(s);
            ushort sh = Unsafe.ReadUnaligned<ushort>(s + 2);
            byte* qs = s + 8;
            // Two sub-blocks per step on independent accumulators.
            for (int ib = 0; ib < 8; ib += 2, qs += 32, x += 64)
            {
                acc0 = TL.Fma(BlockIq4<TV, TL>(qs, x), TL.Broadcast(d * Iq4XsScale(ib, sh, s + 4)), acc0);
                acc1 = TL.Fma(BlockIq4<TV, TL>(qs + 16, x + 32), TL.Broadcast(d * Iq4XsScale(ib + 1, sh, s + 4)), acc1);
            }
        }
        return TL.Sum(TL.Add(acc0, acc1));
    }

    /// <summary>Σ levels[code]·x over the 32 values held by the 16 nibble bytes at <paramref name="qs"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV BlockIq4<TV, TL>(byte* qs, float* x) where TV : struct where TL : IQuantLanes<TV>
    {
        TL.Iq4(qs, out var lo, out var hi);
        TV t = TL.Fma(hi, TL.Load(x + 16), TL.Mul(lo, TL.Load(x)));
        for (int k = TL.Count; k < 16; k += TL.Count)
        {
            TL.Iq4(qs + k, out lo, out hi);
            t = TL.Fma(lo, TL.Load(x + k), t);
            t = TL.Fma(hi, TL.Load(x + 16 + k), t);
        }
        return t;
    }
}
