using System.Runtime.CompilerServices;

namespace Kvq.Tensors.Quant;

// Fused dot kernels, written once per format and specialised per SIMD width through TL (IQuantLanes).
// Pattern: per block (or sub-block sharing one scale), accumulate Σ q·x in a vector with the integer codes decoded to
// floats in registers, then fold the block's scale in with one FMA: acc += (Σ q·x) * d. Formats with a min/offset
// add (Σ x) * m the same way. Only the final horizontal sum is scalar.
public static unsafe partial class QuantFormats
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ8_0<TV, TL>(byte* s, float* x, int nb) where TV : struct where TL : IQuantLanes<TV>
    {
        TV acc0 = TL.Zero, acc1 = TL.Zero;
        int i = 0;
        // Two blocks per step on independent accumulators so consecutive blocks' FMAs do not wait on each other.
        for (; i + 2 <= nb; i += 2, s += 68, x += 64)
        {
            TV t0 = TL.Mul(TL.I8(s + 2), TL.Load(x));
            TV t1 = TL.Mul(TL.I8(s + 36), TL.Load(x + 32));
            for (int k = TL.Count; k < 32; k += TL.Count)
            {
                t0 = TL.Fma(TL.I8(s + 2 + k), TL.Load(x + k), t0);
                t1 = TL.Fma(TL.I8(s + 36 + k), TL.Load(x + 32 + k), t1);
            }
            acc0 = TL.Fma(t0, TL.Broadcast(F16(s)), acc0);
            acc1 = TL.Fma(t1, TL.Broadcast(F16(s + 34)), acc1);
        }
        if (i < nb)
        {
            TV t0 = TL.Mul(TL.I8(s + 2), TL.Load(x));
            for (int k = TL.Count; k < 32; k += TL.Count) t0 = TL.Fma(TL.I8(s + 2 + k), TL.Load(x + k), t0);
            acc0 = TL.Fma(t0, TL.Broadcast(F16(s)), acc0);
        }
        return TL.Sum(TL.Add(acc0, acc1));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ4_0<TV, TL>(byte* s, float* x, int nb) where TV : struct where TL : IQuantLanes<TV>
    {
        TV acc0 = TL.Zero, acc1 = TL.Zero;
        int i = 0;
        for (; i + 2 <= nb; i += 2, s += 36, x += 64)
        {
            acc0 = TL.Fma(BlockQ4_0<TV, TL>(s + 2, x), TL.Broadcast(F16(s)), acc0);
            acc1 = TL.Fma(BlockQ4_0<TV, TL>(s + 20, x + 32), TL.Broadcast(F16(s + 18)), acc1);
        }
        if (i < nb) acc0 = TL.Fma(BlockQ4_0<TV, TL>(s + 2, x), TL.Broadcast(F16(s)), acc0);
        return TL.Sum(TL.Add(acc0, acc1));
    }

    /// <summary>Σ (q - 8)·x over one Q4_0 block's 16 nibble bytes at <paramref name="qs"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV BlockQ4_0<TV, TL>(byte* qs, float* x) where TV : struct where TL : IQuantLanes<TV>
    {
        TL.Nibbles(qs, -8, out var lo, out var hi);
        TV t = TL.Fma(hi, TL.Load(x + 16), TL.Mul(lo, TL.Load(x)));
        for (int k = TL.Count; k < 16; k += TL.Count)
        {
            TL.Nibbles(qs + k, -8, out lo, out hi);
            t = TL.Fma(lo, TL.Load(x + k), t);
            t = TL.Fma(hi, TL.Load(x + 16 + k), t);
        }
        return t;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ4_1<TV, TL>(byte* s, float* x, int nb) where TV : struct where TL : IQuantLanes<TV>
    {
        TV acc0 = TL.Zero, acc1 = TL.Zero;
        for (int i = 0; i < nb; i++, s += 20, x += 32)
        {
            TV t = TL.Zero, sx = TL.Zero;
            for (int k = 0; k < 16; k += TL.Count)
            {
                TL.Nibbles(s + 4 + k, 0, out var lo, out var hi);
                TV x0 = TL.Load(x + k), x1 = TL.Load(x + 16 + k);
                t = TL.Fma(hi, x1, TL.Fma(lo, x0, t));
                sx = TL.Add(sx, TL.Add(x0, x1));
            }
            acc0 = TL.Fma(t, TL.Broadcast(F16(s)), acc0);
            acc1 = TL.Fma(sx, TL.Broadcast(F16(s + 2)), acc1);
        }
        return TL.Sum(TL.Add(acc0, acc1));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ5_0<TV, TL>(byte* s, float* x, int nb) where TV : struct where TL : IQuantLanes<TV>
    {
        TV acc0 = TL.Zero, acc1 = TL.Zero;
        int i = 0;
        for (; i + 2 <= nb; i += 2, s += 44, x += 64)
        {
            acc0 = TL.Fma(BlockQ5_0<TV, TL>(s, x), TL.Broadcast(F16(s)), acc0);
            acc1 = TL.Fma(BlockQ5_0<TV, TL>(s + 22, x + 32), TL.Broadcast(F16(s + 22)), acc1);
        }
        if (i < nb) acc0 = TL.Fma(BlockQ5_0<TV, TL>(s, x), TL.Broadcast(F16(s)), acc0);
        return TL.Sum(TL.Add(acc0, acc1));
    }

    /// <summary>Σ (q5 - 16)·x over the Q5_0 block at <paramref name="s"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static TV BlockQ5_0<TV, TL>(byte* s, float* x) where TV : struct where TL : IQuantLanes<TV>
    {
        uint qh = Unsafe.ReadUnaligned<uint>(s + 2);
        TV t = TL.Zero;
        for (int k = 0; k < 16; k += TL.Count)
        {
            TL.Nibbles5(s + 6 + k, qh >> k, qh >> (16 + k), -16, out var lo, out var hi);
            t = TL.Fma(lo, TL.Load(x + k), t);
            t = TL.Fma(hi, TL.Load(x + 16 + k), t);
        }
        return t;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ5_1<TV, TL>(byte* s, float* x, int nb) where TV : struct where TL : IQuantLanes<TV>
    {
        TV acc0 = TL.Zero, acc1 = TL.Zero;
        for (int i = 0; i < nb; i++, s += 24, x += 32)
        {
            uint qh = Unsafe.ReadUnaligned<uint>(s + 4);
            TV t = TL.Zero, sx = TL.Zero;
            for (int k = 0; k < 16; k += TL.Count)
            {
                TL.Nibbles5(s + 8 + k, qh >> k, qh >> (16 + k), 0, out var lo, out var hi);
                TV x0 = TL.Load(x + k), x1 = TL.Load(x + 16 + k);
                t = TL.Fma(hi, x1, TL.Fma(lo, x0, t));
                sx = TL.Add(sx, TL.Add(x0, x1));
            }
            acc0 = TL.Fma(t, TL.Broadcast(F16(s)), acc0);
            acc1 = TL.Fma(sx, TL.Broadcast(F16(s + 2)), acc1);
        }
        return TL.Sum(TL.Add(acc0, acc1));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ4_K<TV, TL>(byte* s, float* x, int nb) where TV : struct where TL : IQuantLanes<TV>
    {
        TV acc0 = TL.Zero, acc1 = TL.Zero;
        for (int i = 0; i < nb; i++, s += 144)
        {
            float d = F16(s), dmin = F16(s + 2);
            byte* scales = s + 4;
            byte* q = s + 16;
            for (int c = 0; c < 4; c++, q += 32, x += 64)
            {
                // Sub-blocks 2c (low nibbles, x[0..32)) and 2c+1 (high nibbles, x[32..64)) of this chunk.
                TV t1 = TL.Zero, t2 = TL.Zero, s1 = TL.Zero, s2 = TL.Zero;
                for (int k = 0; k < 32; k += TL.Count)
                {
                    TL.Nibbles(q + k, 0, out var lo, out var hi);
                    TV x1 = TL.Load(x + k), x2 = TL.Load(x + 32 + k);
                    t1 = TL.Fma(lo, x1, t1);
                    t2 = TL.Fma(hi, x2, t2);
                    s1 = TL.Add(s1, x1);
                    s2 = TL.Add(s2, x2);
                }
                ScaleMinPair<TV, TL>(c, scales, d, dmin, t1, t2, s1, s2, ref acc0, ref acc1);
            }
        }
        return TL.Sum(TL.Add(acc0, acc1));
    }

    /// <summary>Q4_K's and Q5_K's sub-blocks 2c and 2c+1 of a chunk into the accumulators: the code sums
    /// <paramref name="t1"/>/<paramref name="t2"/> times d x scale, the input sums <paramref name="s1"/>/<paramref name="s2"/>
    /// times -dmin x min (the two formats differ only in how they unpack the codes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleMinPair<TV, TL>(int c, byte* scales, float d, float dmin, TV t1, TV t2, TV s1, TV s2, ref TV acc0, ref TV acc1)
        where TV : struct where TL : IQuantLanes<TV>
    {
        ScaleMinK4(2 * c, scales, out int sc1, out int m1);
        ScaleMinK4(2 * c + 1, scales, out int sc2, out int m2);
        acc0 = TL.Fma(t1, TL.Broadcast(d * sc1), acc0);
        acc1 = TL.Fma(s1, TL.Broadcast(-dmin * m1), acc1);
        acc0 = TL.Fma(t2, TL.Broadcast(d * sc2), acc0);
        acc1 = TL.Fma(s2, TL.Broadcast(-dmin * m2), acc1);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ5_K<TV, TL>(byte* s, float* x, int nb) where TV : struct where TL : IQuantLanes<TV>
    {
        TV acc0 = TL.Zero, acc1 = TL.Zero;
        for (int i = 0; i < nb; i++, s += 176)
        {
            float d = F16(s), dmin = F16(s + 2);
            byte* scales = s + 4;
            byte* qh = s + 16;
            byte* ql = s + 48;
            for (int c = 0; c < 4; c++, ql += 32, x += 64)
            {
                TV t1 = TL.Zero, t2 = TL.Zero, s1 = TL.Zero, s2 = TL.Zero;
                for (int k = 0; k < 32; k += TL.Count)
                {
                    TL.Nibbles5K(ql + k, qh + k, 2 * c, out var lo, out var hi);
                    TV x1 = TL.Load(x + k), x2 = TL.Load(x + 32 + k);
                    t1 = TL.Fma(lo, x1, t1);
                    t2 = TL.Fma(hi, x2, t2);
                    s1 = TL.Add(s1, x1);
                    s2 = TL.Add(s2, x2);
                }
                ScaleMinPair<TV, TL>(c, scales, d, dmin, t1, t2, s1, s2, ref acc0, ref acc1);
            }
        }
        return TL.Sum(TL.Add(acc0, acc1));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float DotQ6_K<TV, TL>(byte* s, float* x, int nb) where TV : struct where TL : IQuantLanes<TV>
    {
        TV acc0 = TL.Zero, acc1 = TL.Zero;
        for (int i = 0; i < nb; i++, s += 210)
        {
            float d = F16(s + 208);
            byte* ql = s;
            byte* qh = s + 128;
            sbyte* sc = (sbyte*)(s + 192);
            for (int n = 0; n < 2; n++, ql += 64, qh += 32, sc += 8, x += 128)
            {
                // g: which 16-value scale group of each 32-value quarter.
                for (int g = 0; g < 2; g++)
                {
                    TV t1 = TL.Zero, t2 = TL.Zero, t3 = TL.Zero, t4 = TL.Zero;
                    for (int k = 16 * g; k < 16 * g + 16; k += TL.Count)
                    {
                        TL.Six(ql + k, qh + k, out var q1, out var q2, out var q3, out var q4);
                        t1 = TL.Fma(q1, TL.Load(x + k), t1);
                        t2 = TL.Fma(q2, TL.Load(x + 32 + k), t2);
                        t3 = TL.Fma(q3, TL.Load(x + 64 + k), t3);
                        t4 = TL.Fma(q4, TL.Load(x + 96 + k), t4);
                    }
                    acc0 = TL.Fma(t1, TL.Broadcast(d * sc[g]), acc0);
                    acc1 = TL.Fma(t2, TL.Broadcast(d * sc[g + 2]), acc1);
                    acc0 = TL.Fma(t3, TL.Broadcast(d * sc[g + 4]), acc0);
                    acc1 = TL.Fma(t4, TL.Broadcast(d * sc[g + 6]), acc1);
                }
            }
        }
        return TL.Sum(TL.Add(acc0, acc1));
    }
}
