using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Kvq.Cache.Codecs;

/// <summary>
/// Uniform integer codes (8, 4 or 2 bits) with per-channel asymmetric scaling: each channel (one of HeadDim) gets
/// an f16 scale and an f16 zero from its min/max over the block's tokens (<see cref="AsymmetricQuantizer"/>), so a
/// block is encoded only once all its tokens are present (recent tokens wait in f16 staging). Per-channel scaling
/// follows the outlier channels that keys carry (KIVI, KVQuant). Bits per value = bits + 32 / BlockTokens.
/// Block layout (bytes): codes (BlockTokens, HeadDim * bits / 8), token-major, each token one packed run of
/// HeadDim codes; then scales (HeadDim) f16 LE; then zeros (HeadDim) f16 LE.
/// </summary>
public sealed class UniformChannelCodec : KvCodec, IKvCodecReference
{
    private readonly string _name;
    private readonly int _rowBytes;    // packed code bytes per token
    private readonly int _codesBytes;  // code bytes of the whole block

    public int Bits { get; }

    public UniformChannelCodec(string name, int bits, int blockTokens, int headDim) : base(blockTokens, headDim)
    {
        if (bits is not (2 or 4 or 8)) throw new KvSpecException($"{name}: {bits}-bit codes are not supported (2, 4 or 8)");
        if (!PackedCodes.CanPack(headDim, bits))
            throw new KvSpecException($"{name}: a token of {headDim} {bits}-bit codes does not fill whole bytes (head dim must be a multiple of {8 / bits})");
        _name = name;
        Bits = bits;
        _rowBytes = PackedCodes.Bytes(headDim, bits);
        _codesBytes = blockTokens * _rowBytes;
    }

    public override string Name => _name;
    public override bool EncodesWholeBlocks => true;

    public override KvBytes BlockLayout => new(_codesBytes, 2L * HeadDim, 2L * HeadDim, 0, 0, 0);

    public override void EncodeBlock(ReadOnlySpan<float> xs, Span<byte> block)
    {
        int hd = HeadDim;
        Span<float> lo = hd <= 256 ? stackalloc float[hd] : new float[hd];
        Span<float> hi = hd <= 256 ? stackalloc float[hd] : new float[hd];
        Span<float> sf = hd <= 256 ? stackalloc float[hd] : new float[hd];
        Span<float> zf = hd <= 256 ? stackalloc float[hd] : new float[hd];
        Span<byte> codes = hd <= 256 ? stackalloc byte[hd] : new byte[hd];
        ChannelRanges(xs, hd, lo, hi);
        var scales = MemoryMarshal.Cast<byte, Half>(block.Slice(_codesBytes, 2 * hd));
        var zeros = MemoryMarshal.Cast<byte, Half>(block.Slice(_codesBytes + 2 * hd, 2 * hd));
        for (int c = 0; c < hd; c++)
        {
            (scales[c], zeros[c]) = AsymmetricQuantizer.Fit(lo[c], hi[c], Bits);
            sf[c] = (float)scales[c];
            zf[c] = (float)zeros[c];
        }
        for (int t = 0; t < BlockTokens; t++)
        {
            var x = xs.Slice(t * hd, hd);
            for (int c = 0; c < hd; c++) codes[c] = AsymmetricQuantizer.Code(x[c], sf[c], zf[c], Bits);
            PackedCodes.Pack(codes, Bits, block.Slice(t * _rowBytes, _rowBytes));
        }
    }

    /// <summary>Per-channel min and max over the rows of xs (rows, hd).</summary>
    private static void ChannelRanges(ReadOnlySpan<float> xs, int hd, Span<float> lo, Span<float> hi)
    {
        xs[..hd].CopyTo(lo);
        xs[..hd].CopyTo(hi);
        for (int t = 1; t < xs.Length / hd; t++)
        {
            var x = xs.Slice(t * hd, hd);
            TensorPrimitives.Min(lo, x, lo);
            TensorPrimitives.Max(hi, x, hi);
        }
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        int hd = HeadDim;
        Span<float> s = hd <= 256 ? stackalloc float[hd] : new float[hd];
        Span<float> z = hd <= 256 ? stackalloc float[hd] : new float[hd];
        TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(block.Slice(_codesBytes, 2 * hd)), s);
        TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(block.Slice(_codesBytes + 2 * hd, 2 * hd)), z);
        for (int t = 0; t < count; t++)
        {
            var row = dst.Slice(t * hd, hd);
            // Codes as floats (scale 1, zero 0 is exact), then code * scale + zero per channel, unfused like the reference.
            PackedCodes.Dequantize(block.Slice(t * _rowBytes, _rowBytes), hd, Bits, 1f, 0f, row);
            TensorPrimitives.MultiplyAdd(row, s, z, row);
        }
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        int hd = HeadDim;
        for (int t = 0; t < count; t++)
        {
            var run = block.Slice(t * _rowBytes, _rowBytes);
            for (int c = 0; c < hd; c++)
            {
                float s = (float)BinaryPrimitives.ReadHalfLittleEndian(block[(_codesBytes + 2 * c)..]);
                float z = (float)BinaryPrimitives.ReadHalfLittleEndian(block[(_codesBytes + 2 * hd + 2 * c)..]);
                dst[t * hd + c] = PackedCodes.Code(run, hd, Bits, c) * s + z;
            }
        }
    }

    /// <summary>Per value: <see cref="AsymmetricQuantizer.MaxAbsError"/> over the min/max of its channel in the block.</summary>
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound)
    {
        int hd = HeadDim;
        var lo = new float[hd];
        var hi = new float[hd];
        ChannelRanges(xs, hd, lo, hi);
        for (int c = 0; c < hd; c++)
        {
            float e = AsymmetricQuantizer.MaxAbsError(lo[c], hi[c], Bits);
            for (int t = 0; t < xs.Length / hd; t++) bound[t * hd + c] = e;
        }
    }
}
