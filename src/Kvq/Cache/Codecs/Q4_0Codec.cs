using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Kvq.Cache.Codecs;

/// <summary>
/// llama.cpp's q4_0 cache type, byte for byte. Each token's HeadDim values are cut into groups of 32 along the head
/// dimension (QK4_0); a group is ggml's block_q4_0: an f16 scale d, then 16 bytes of 4-bit codes, value j in the low
/// nibble of byte j and value j + 16 in the high nibble (18 bytes per 32 values = 4.5 bits). Encoding follows ggml's
/// quantize_row_q4_0_ref: d = m / -8 where m is the value of largest magnitude (sign kept, first one on ties),
/// code = min(15, trunc(x * (1/d) + 8.5)), so codes span [-8, 7] around 8 and the value -m clamps to 7 (one full step
/// of error at that end). Decoding is (code - 8) * f16(d).
/// Block layout: token t's groups at t * (HeadDim / 32) * 18 bytes, each [d: f16 LE][qs: 16 bytes].
/// Encoding is ggml's (shared with the weight formats in Kvq.Tensors.Quant); decoding and the fused scores are
/// specialised here for the cache's token-major blocks.
/// </summary>
public sealed class Q4_0Codec : KvCodec, IKvCodecReference
{
    /// <summary>Values per ggml block (QK4_0).</summary>
    public const int GroupValues = 32;
    /// <summary>Bytes per ggml block: f16 scale + 16 bytes of nibbles.</summary>
    public const int GroupBytes = 2 + GroupValues / 2;

    private readonly int _groups;      // ggml blocks per token
    private readonly int _tokenBytes;  // bytes per token

    public Q4_0Codec(int blockTokens, int headDim) : base(blockTokens, headDim)
    {
        if (headDim % GroupValues != 0)
            throw new KvSpecException($"q4_0 stores groups of {GroupValues} values along the head dimension (llama.cpp's " +
                $"QK4_0 = {GroupValues}); head dim {headDim} is not a multiple of {GroupValues}");
        _groups = headDim / GroupValues;
        _tokenBytes = _groups * GroupBytes;
    }

    public override string Name => "q4_0";

    public override KvBytes BlockLayout =>
        new((long)BlockTokens * HeadDim / 2, 2L * BlockTokens * _groups, 0, 0, 0, 0);

    protected override TokenSection[] DescribeTokenSections() => [new(0, _tokenBytes)];

    /// <summary>ggml's encoder (Kvq.Tensors.Quant.QuantFormats, SIMD and bit-exact to quantize_row_q4_0_ref):
    /// a token's HeadDim values are HeadDim / 32 consecutive ggml blocks.</summary>
    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) =>
        Tensors.Quant.QuantFormats.Quantize(Tensors.GgmlType.Q4_0, x[..HeadDim], block.Slice(slot * _tokenBytes, _tokenBytes));

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        if (!Vector128.IsHardwareAccelerated) { DecodeBlockReference(block, count, dst); return; }
        int n = count * _groups;
        dst = dst[..(count * HeadDim)];
        ref byte src = ref MemoryMarshal.GetReference(block[..(n * GroupBytes)]);
        ref float o = ref MemoryMarshal.GetReference(dst);
        var mask = Vector128.Create((byte)0x0F);
        var eight = Vector128.Create((sbyte)8);
        for (int b = 0; b < n; b++)
        {
            ref byte g = ref Unsafe.Add(ref src, b * GroupBytes);
            var d = Vector128.Create((float)Unsafe.ReadUnaligned<Half>(ref g));
            var qs = Vector128.LoadUnsafe(ref Unsafe.Add(ref g, 2));
            ref float og = ref Unsafe.Add(ref o, b * GroupValues);
            // Low nibbles are values 0..15, high nibbles 16..31; subtract 8 in integers, as ggml does, then scale.
            Store16((qs & mask).AsSByte() - eight, d, ref og);
            Store16(Vector128.ShiftRightLogical(qs, 4).AsSByte() - eight, d, ref Unsafe.Add(ref og, 16));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store16(Vector128<sbyte> v, Vector128<float> d, ref float o)
    {
        var (s0, s1) = Vector128.Widen(v);
        var (i0, i1) = Vector128.Widen(s0);
        var (i2, i3) = Vector128.Widen(s1);
        (Vector128.ConvertToSingle(i0) * d).StoreUnsafe(ref o);
        (Vector128.ConvertToSingle(i1) * d).StoreUnsafe(ref o, 4);
        (Vector128.ConvertToSingle(i2) * d).StoreUnsafe(ref o, 8);
        (Vector128.ConvertToSingle(i3) * d).StoreUnsafe(ref o, 12);
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        for (int b = 0; b < count * _groups; b++)
        {
            var g = block.Slice(b * GroupBytes, GroupBytes);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(g);
            for (int j = 0; j < GroupValues / 2; j++)
            {
                dst[b * GroupValues + j] = ((g[2 + j] & 0x0F) - 8) * d;
                dst[b * GroupValues + j + GroupValues / 2] = ((g[2 + j] >> 4) - 8) * d;
            }
        }
    }

    /// <summary>
    /// Per value, with d = m / -8 over its group: |d|/2 from rounding, or |x/d - 7| |d| where the code clamps at 7
    /// (x/d above 7.5: values near -m), plus 8 |d - f16(d)| (the stored scale is rounded to f16) and a few f32 ulps.
    /// </summary>
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound)
    {
        for (int b = 0; b < xs.Length / GroupValues; b++)
        {
            var x = xs.Slice(b * GroupValues, GroupValues);
            float amax = 0f, max = 0f;
            foreach (var v in x)
                if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
            float d = max / -8f;
            float slack = 8 * MathF.Abs(d - (float)(Half)d) + 4e-7f * amax;
            for (int j = 0; j < GroupValues; j++)
            {
                float r = d != 0f ? x[j] / d : 0f;
                bound[b * GroupValues + j] = MathF.Abs(d) * MathF.Max(0.5f, r - 7f) + slack;
            }
        }
    }
}
