using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Kvq.Cache.Codecs;

/// <summary>
/// Uniform integer codes (8, 4 or 2 bits) with per-token asymmetric scaling: each token's HeadDim values are cut
/// into groups of <see cref="Group"/> along the head dimension, and each group stores an f16 scale and an f16 zero
/// from its own min/max (<see cref="AsymmetricQuantizer"/>) plus its bit-packed codes (<see cref="PackedCodes"/>).
/// Bits per value = bits + 32 / Group. Tokens are encoded as they arrive.
/// Block layout (bytes): codes (BlockTokens, HeadDim * bits / 8), token-major, one packed run per group;
/// then scales (BlockTokens, HeadDim / Group) f16 LE; then zeros (BlockTokens, HeadDim / Group) f16 LE.
/// </summary>
public sealed class UniformTokenCodec : KvCodec, IKvCodecReference
{
    private readonly string _name;
    private readonly int _groups;          // per token
    private readonly int _groupBytes;      // packed code bytes per group
    private readonly int _codesBytes;      // code bytes of the whole block
    private readonly int _scalesBytes;     // scale (and zero) bytes of the whole block

    public int Bits { get; }
    /// <summary>Values per group along the head dimension.</summary>
    public int Group { get; }

    public UniformTokenCodec(string name, int bits, int group, int blockTokens, int headDim) : base(blockTokens, headDim)
    {
        if (bits is not (2 or 4 or 8)) throw new KvSpecException($"{name}: {bits}-bit codes are not supported (2, 4 or 8)");
        if (group <= 0 || headDim % group != 0)
            throw new KvSpecException($"{name}: groups of {group} values along the head dimension must tile it; head dim {headDim} is not a multiple of {group}");
        if (!PackedCodes.CanPack(group, bits))
            throw new KvSpecException($"{name}: a group of {group} {bits}-bit codes does not fill whole bytes (need a multiple of {8 / bits})");
        _name = name;
        Bits = bits;
        Group = group;
        _groups = headDim / group;
        _groupBytes = PackedCodes.Bytes(group, bits);
        _codesBytes = blockTokens * _groups * _groupBytes;
        _scalesBytes = 2 * blockTokens * _groups;
    }

    public override string Name => _name;

    public override KvBytes BlockLayout => new(_codesBytes, _scalesBytes, _scalesBytes, 0, 0, 0);

    protected override TokenSection[] DescribeTokenSections() =>
        [new(0, _groups * _groupBytes), new(_codesBytes, 2 * _groups), new(_codesBytes + _scalesBytes, 2 * _groups)];

    private Span<Half> Scales(Span<byte> block) => MemoryMarshal.Cast<byte, Half>(block.Slice(_codesBytes, _scalesBytes));
    private Span<Half> Zeros(Span<byte> block) => MemoryMarshal.Cast<byte, Half>(block.Slice(_codesBytes + _scalesBytes, _scalesBytes));
    private ReadOnlySpan<Half> Scales(ReadOnlySpan<byte> block) => MemoryMarshal.Cast<byte, Half>(block.Slice(_codesBytes, _scalesBytes));
    private ReadOnlySpan<Half> Zeros(ReadOnlySpan<byte> block) => MemoryMarshal.Cast<byte, Half>(block.Slice(_codesBytes + _scalesBytes, _scalesBytes));

    public override void EncodeToken(ReadOnlySpan<float> x, Span<byte> block, int slot)
    {
        Span<byte> codes = stackalloc byte[Group];
        var scales = Scales(block);
        var zeros = Zeros(block);
        for (int g = 0; g < _groups; g++)
        {
            var xg = x.Slice(g * Group, Group);
            float lo = xg[0], hi = xg[0];
            foreach (var v in xg) { lo = MathF.Min(lo, v); hi = MathF.Max(hi, v); }
            var (s, z) = AsymmetricQuantizer.Fit(lo, hi, Bits);
            float sf = (float)s, zf = (float)z;
            for (int j = 0; j < Group; j++) codes[j] = AsymmetricQuantizer.Code(xg[j], sf, zf, Bits);
            int gi = slot * _groups + g;
            PackedCodes.Pack(codes, Bits, block.Slice(gi * _groupBytes, _groupBytes));
            scales[gi] = s;
            zeros[gi] = z;
        }
    }

    public override void DecodeBlock(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        var scales = Scales(block);
        var zeros = Zeros(block);
        for (int gi = 0; gi < count * _groups; gi++)
            PackedCodes.Dequantize(block.Slice(gi * _groupBytes, _groupBytes), Group, Bits, (float)scales[gi], (float)zeros[gi],
                dst.Slice(gi * Group, Group));
    }

    public void DecodeBlockReference(ReadOnlySpan<byte> block, int count, Span<float> dst)
    {
        for (int gi = 0; gi < count * _groups; gi++)
        {
            float s = (float)BinaryPrimitives.ReadHalfLittleEndian(block[(_codesBytes + 2 * gi)..]);
            float z = (float)BinaryPrimitives.ReadHalfLittleEndian(block[(_codesBytes + _scalesBytes + 2 * gi)..]);
            var run = block.Slice(gi * _groupBytes, _groupBytes);
            for (int j = 0; j < Group; j++) dst[gi * Group + j] = PackedCodes.Code(run, Group, Bits, j) * s + z;
        }
    }

    /// <summary>Per value: <see cref="AsymmetricQuantizer.MaxAbsError"/> over the min/max of its group.</summary>
    public void MaxAbsError(ReadOnlySpan<float> xs, Span<float> bound)
    {
        for (int gi = 0; gi < xs.Length / Group; gi++)
        {
            var xg = xs.Slice(gi * Group, Group);
            float lo = xg[0], hi = xg[0];
            foreach (var v in xg) { lo = MathF.Min(lo, v); hi = MathF.Max(hi, v); }
            bound.Slice(gi * Group, Group).Fill(AsymmetricQuantizer.MaxAbsError(lo, hi, Bits));
        }
    }
}
