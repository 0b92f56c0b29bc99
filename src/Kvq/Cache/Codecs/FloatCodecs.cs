using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Kvq.Tensors.Quant;

namespace Kvq.Cache.Codecs;

/// <summary>Plain f32 storage (the reference).</summary>
public sealed class F32Codec(int blockTokens, int headDim) : KvCodec(blockTokens, headDim)
{
    public override string Name => "f32";
    public override KvBytes BlockLayout => KvBytes.CodesOnly(4L * BlockTokens * HeadDim);
    protected override TokenSection[] DescribeTokenSections() => [new(0, 4 * HeadDim)];

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) =>
        x.CopyTo(MemoryMarshal.Cast<byte, float>(block).Slice(slot * HeadDim, HeadDim));

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) =>
        MemoryMarshal.Cast<byte, float>(block)[..(count * HeadDim)].CopyTo(dst);

    // The block already is a tile: no copy.
    public override void Scores(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile) =>
        Attention.TileMath.Scores(MemoryMarshal.Cast<byte, float>(block)[..(count * HeadDim)], count, HeadDim, q, nq, scores);

    public override void Accumulate(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile) =>
        Attention.TileMath.Accumulate(MemoryMarshal.Cast<byte, float>(block)[..(count * HeadDim)], count, HeadDim, w, nq, acc);
}

/// <summary>IEEE half storage (round to nearest even), as llama.cpp's default f16 cache.</summary>
public sealed class F16Codec(int blockTokens, int headDim) : KvCodec(blockTokens, headDim)
{
    public override string Name => "f16";
    public override KvBytes BlockLayout => KvBytes.CodesOnly(2L * BlockTokens * HeadDim);
    protected override TokenSection[] DescribeTokenSections() => [new(0, 2 * HeadDim)];

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot) =>
        TensorPrimitives.ConvertToHalf(x, MemoryMarshal.Cast<byte, Half>(block).Slice(slot * HeadDim, HeadDim));

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) =>
        HalfDot.ToSingle(MemoryMarshal.Cast<byte, Half>(block)[..(count * HeadDim)], dst);

    // Fused: halves are widened in registers and used at once, no tile written and read back.
    public override void Scores(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> q, int nq, Span<float> scores, Span<float> tile)
    {
        // Many query rows (prefill): widen the tile once, then the f32 kernel's two-rows-per-load scheme wins.
        if (!Attention.HalfTileMath.IsSupported(HeadDim) || nq > 4) { base.Scores(block, count, q, nq, scores, tile); return; }
        Attention.HalfTileMath.Scores(MemoryMarshal.Cast<byte, Half>(block)[..(count * HeadDim)], count, HeadDim, q, nq, scores);
    }

    public override void Accumulate(ReadOnlySpan<byte> block, int count, ReadOnlySpan<float> w, int nq, Span<float> acc, Span<float> tile)
    {
        // With many query rows (prefill) widening the tile once beats widening it once per row.
        if (!Attention.HalfTileMath.IsSupported(HeadDim) || nq > 4) { base.Accumulate(block, count, w, nq, acc, tile); return; }
        Attention.HalfTileMath.Accumulate(MemoryMarshal.Cast<byte, Half>(block)[..(count * HeadDim)], count, HeadDim, w, nq, acc);
    }
}

/// <summary>bfloat16 storage (round to nearest even).</summary>
public sealed class Bf16Codec(int blockTokens, int headDim) : KvCodec(blockTokens, headDim)
{
    public override string Name => "bf16";
    public override KvBytes BlockLayout => KvBytes.CodesOnly(2L * BlockTokens * HeadDim);
    protected override TokenSection[] DescribeTokenSections() => [new(0, 2 * HeadDim)];

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot)
    {
        var dst = MemoryMarshal.Cast<byte, ushort>(block).Slice(slot * HeadDim, HeadDim);
        for (int i = 0; i < x.Length; i++) dst[i] = Bf16.FromSingle(x[i]);
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst) =>
        Bf16.ToSingle(MemoryMarshal.Cast<byte, ushort>(block)[..(count * HeadDim)], dst);
}
