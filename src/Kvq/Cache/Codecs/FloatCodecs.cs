using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs;

/// <summary>Plain f32 storage (the reference).</summary>
public sealed class F32Codec(int blockTokens, int headDim) : KvCodec(blockTokens, headDim)
{
    public override string Name => "f32";
    public override KvBytes BlockLayout => KvBytes.CodesOnly(4L * BlockTokens * HeadDim);

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) =>
        x.CopyTo(MemoryMarshal.Cast<byte, float>(block).Slice(slot * HeadDim, HeadDim));

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) =>
        MemoryMarshal.Cast<byte, float>(block)[..(count * HeadDim)].CopyTo(dst);
}

/// <summary>IEEE half storage (round to nearest even), as llama.cpp's default f16 cache.</summary>
public sealed class F16Codec(int blockTokens, int headDim) : KvCodec(blockTokens, headDim)
{
    public override string Name => "f16";
    public override KvBytes BlockLayout => KvBytes.CodesOnly(2L * BlockTokens * HeadDim);

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) =>
        TensorPrimitives.ConvertToHalf(x, MemoryMarshal.Cast<byte, Half>(block).Slice(slot * HeadDim, HeadDim));

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) =>
        HalfDot.ToSingle(MemoryMarshal.Cast<byte, Half>(block)[..(count * HeadDim)], dst);
}

/// <summary>bfloat16 storage (round to nearest even).</summary>
public sealed class Bf16Codec(int blockTokens, int headDim) : KvCodec(blockTokens, headDim)
{
    public override string Name => "bf16";
    public override KvBytes BlockLayout => KvBytes.CodesOnly(2L * BlockTokens * HeadDim);

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot)
    {
        var dst = MemoryMarshal.Cast<byte, ushort>(block).Slice(slot * HeadDim, HeadDim);
        for (int i = 0; i < x.Length; i++) dst[i] = Bf16.FromSingle(x[i]);
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) =>
        Bf16.ToSingle(MemoryMarshal.Cast<byte, ushort>(block)[..(count * HeadDim)], dst);
}
