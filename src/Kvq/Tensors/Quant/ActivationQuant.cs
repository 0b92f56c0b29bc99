using System.Runtime.CompilerServices;

namespace Kvq.Tensors.Quant;

/// <summary>
/// The 8-bit rounding that ggml's CPU backend applies to the activation row of every quantized matrix product: before
/// the dot, x is encoded in the weight type's "vec_dot_type" (Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL, Q8_1 for Q4_1/Q5_1, Q8_K
/// for the K-quants and IQ4_XS), and the dot runs on integers per block. Kvq does the same by default, so its logits
/// agree with llama.cpp's where near-tied tokens (Gemma's tied output) would otherwise flip; <see cref="WeightMatrix.ExactActivations"/>
/// keeps x in f32 for research. Written from the block formats (ggml-common.h) and the rounding each encoder uses:
/// <list type="bullet">
/// <item>Q8_0 / Q8_1 (32 values): d = amax / 127 stored as f16, codes round(x · 127 / amax) to nearest even (the AVX
/// encoder ggml-cpu uses on x86); Q8_1 also keeps s = d · Σ codes as f16.</item>
/// <item>Q8_K (256 values): the value of largest magnitude m (first one on ties) gets code -127: codes
/// min(127, round(x · -127 / m)) to nearest even, d = 1 / (-127 / m) in f32, plus the sum of each 16 codes.</item>
/// </list>
/// Everything here is scalar: it runs once per activation row (O(cols)), not once per weight row.
/// </summary>
public static unsafe class ActivationQuant
{
    /// <summary>The activation encoding ggml pairs with weights of <paramref name="weight"/>, or null where the
    /// activations stay in floats (F32, F16, BF16: ggml rounds those to f16/bf16, which Kvq does not copy).</summary>
    public static GgmlType? VecDotType(GgmlType weight) => weight switch
    {
        GgmlType.Q4_0 or GgmlType.Q5_0 or GgmlType.Q8_0 or GgmlType.IQ4_NL => GgmlType.Q8_0,
        GgmlType.Q4_1 or GgmlType.Q5_1 => GgmlType.Q8_1,
        GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.IQ4_XS => GgmlType.Q8_K,
        _ => null,
    };

    /// <summary>Encodes <paramref name="x"/> (a multiple of the block size) as <paramref name="type"/> (Q8_0, Q8_1 or
    /// Q8_K) into <paramref name="dst"/>, ggml's byte layout.</summary>
    public static void Quantize(GgmlType type, ReadOnlySpan<float> x, Span<byte> dst)
    {
        int nb = Check(type, x.Length, dst.Length);
        fixed (float* px = x)
        fixed (byte* pd = dst)
        {
            for (int i = 0; i < nb; i++)
            {
                switch (type)
                {
                    case GgmlType.Q8_0: BlockQ8_0(px + 32 * i, pd + 34 * i, null); break;
                    case GgmlType.Q8_1:
                    {
                        byte* b = pd + 36 * i;
                        // Q8_1: d @0, s @2, codes @4.
                        float d = BlockQ8_0(px + 32 * i, b + 4, b);
                        int sum = 0;
                        for (int j = 0; j < 32; j++) sum += ((sbyte*)(b + 4))[j];
                        Unsafe.WriteUnaligned(b + 2, BitConverter.HalfToUInt16Bits((Half)(d * sum)));
                        break;
                    }
                    default: BlockQ8_K(px + 256 * i, pd + 292 * i); break;
                }
            }
        }
    }

    /// <summary>
    /// What the encoded row stands for, value by value: code · d with d as stored (f16 for Q8_0/Q8_1, f32 for Q8_K).
    /// A float dot of a weight row with this equals ggml's integer dot to float rounding, which is how Kvq's float
    /// kernels (and the batched f32 GEMM) see llama.cpp's activations.
    /// </summary>
    public static void RoundTrip(GgmlType type, ReadOnlySpan<float> x, Span<float> dst)
    {
        int bs = type == GgmlType.Q8_K ? 256 : 32;
        if (dst.Length < x.Length) throw new ArgumentException($"RoundTrip: {dst.Length} outputs for {x.Length} values");
        int ts = GgmlTypeInfo.TypeSize(type);
        Span<byte> block = stackalloc byte[292];
        block = block[..ts];
        for (int i = 0; i < x.Length; i += bs)
        {
            Quantize(type, x.Slice(i, bs), block);
            Decode(type, block, dst.Slice(i, bs));
        }
    }

    /// <summary>Values of encoded blocks: code · d.</summary>
    public static void Decode(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        int nb = Check(type, dst.Length, src.Length);
        fixed (byte* s = src)
        {
            for (int i = 0; i < nb; i++)
            {
                switch (type)
                {
                    case GgmlType.Q8_0:
                    case GgmlType.Q8_1:
                    {
                        byte* b = s + i * (type == GgmlType.Q8_0 ? 34 : 36);
                        float d = QuantFormats.HalfToSingle(Unsafe.ReadUnaligned<ushort>(b));
                        sbyte* q = (sbyte*)(b + (type == GgmlType.Q8_0 ? 2 : 4));
                        for (int j = 0; j < 32; j++) dst[32 * i + j] = q[j] * d;
                        break;
                    }
                    default:
                    {
                        byte* b = s + 292 * i;
                        float d = Unsafe.ReadUnaligned<float>(b);
                        sbyte* q = (sbyte*)(b + 4);
                        for (int j = 0; j < 256; j++) dst[256 * i + j] = q[j] * d;
                        break;
                    }
                }
            }
        }
    }

    /// <summary>One Q8_0 block's 32 codes into <paramref name="codes"/>; returns its f16 d's bits.</summary>
    internal static ushort BlockQ8_0(float* x, byte* codes)
    {
        ushort h;
        BlockQ8_0(x, codes, (byte*)&h);
        return h;
    }

    /// <summary>One Q8_0 block: 32 codes at <paramref name="codes"/>, f16 d at <paramref name="scale"/> (or just before the
    /// codes when null). Returns d in f32, before the f16 rounding (Q8_1's s uses it).</summary>
    private static float BlockQ8_0(float* x, byte* codes, byte* scale)
    {
        if (scale == null) { scale = codes; codes += 2; }
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = MathF.Max(amax, MathF.Abs(x[j]));
        float d = amax / 127f;
        float id = amax != 0 ? 127f / amax : 0f;
        Unsafe.WriteUnaligned(scale, BitConverter.HalfToUInt16Bits((Half)d));
        for (int j = 0; j < 32; j++) ((sbyte*)codes)[j] = (sbyte)(int)MathF.Round(x[j] * id, MidpointRounding.ToEven);
        return d;
    }

    // Q8_K, 292 bytes: d f32 @0, codes[256] int8 @4, bsums[16] int16 @260 (sum of each 16 codes).
    private static void BlockQ8_K(float* x, byte* b)
    {
        float max = 0, amax = 0;
        for (int j = 0; j < 256; j++)
        {
            float ax = MathF.Abs(x[j]);
            if (ax > amax) { amax = ax; max = x[j]; }
        }
        sbyte* q = (sbyte*)(b + 4);
        short* bsums = (short*)(b + 260);
        if (amax == 0)
        {
            Unsafe.WriteUnaligned(b, 0f);
            new Span<byte>(b + 4, 288).Clear();
            return;
        }
        float iscale = -127f / max;
        for (int j = 0; j < 256; j++) q[j] = (sbyte)Math.Min(127, (int)MathF.Round(iscale * x[j], MidpointRounding.ToEven));
        for (int g = 0; g < 16; g++)
        {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += q[16 * g + j];
            Unsafe.WriteUnaligned(bsums + g, (short)sum);
        }
        Unsafe.WriteUnaligned(b, 1 / iscale);
    }

    private static int Check(GgmlType type, int values, int bytes)
    {
        if (type is not (GgmlType.Q8_0 or GgmlType.Q8_1 or GgmlType.Q8_K))
            throw new NotSupportedException($"{type} is not an activation encoding (Q8_0, Q8_1, Q8_K)");
        int bs = GgmlTypeInfo.BlockSize(type);
        if (values % bs != 0) throw new ArgumentException($"{type}: {values} values is not a multiple of the block size {bs}");
        long need = GgmlTypeInfo.RowBytes(type, values);
        if (bytes < need) throw new ArgumentException($"{type}: {values} values need {need} bytes, the span has {bytes}");
        return values / bs;
    }
}
