using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.Rotation;
using Kvq.Tensors;

namespace Kvq.Tests.Cache.Codecs.Rotation;

/// <summary>
/// <c>FORMAT:rot</c>: the stored block is the inner codec's encoding of H x / sqrt(n), byte for byte; decoding is the
/// inner decode rotated back; the rotation helps per-group scales on vectors with an outlier channel; names parse and
/// refuse as they should.
/// </summary>
public class RotatedCodecTests
{
    [Theory]
    [InlineData("q4_0", 64)]
    [InlineData("q8_0", 96)]
    [InlineData("int4", 64)]
    [InlineData("int2-g64", 128)]
    [InlineData("int4-ch", 64)]
    public void BlockIsInnerEncodingOfRotatedVectorsAndDecodesBack(string inner, int hd)
    {
        const int bt = 7;
        var rot = KvCodecRegistry.Create(inner + ":rot", KvSide.Key, bt, hd);
        var plain = KvCodecRegistry.Create(inner, KvSide.Key, bt, hd);
        var xs = CodecTestData.Tokens(bt, hd, 5 + hd);
        var rotated = (float[])xs.Clone();
        // Dense H / sqrt(n) per run, in f64: an oracle independent of the fast transform.
        int n = Hadamard.BlockSize(hd);
        for (int t = 0; t < bt; t++)
            for (int r0 = 0; r0 < hd; r0 += n)
                for (int i = 0; i < n; i++)
                {
                    double s = 0;
                    for (int j = 0; j < n; j++) s += Hadamard.Entry(i, j) * (double)xs[t * hd + r0 + j];
                    rotated[t * hd + r0 + i] = (float)(s / Math.Sqrt(n));
                }
        var a = CodecTestData.Encode(rot, xs, 3);
        var decoded = new float[bt * hd];
        rot.DecodeBlock(a, bt, decoded);
        var innerDecoded = new float[bt * hd];
        plain.DecodeBlock(a, bt, innerDecoded);
        // The inner codec's view of the block decodes close to the rotated vectors (within its bound: the same
        // codes, up to the last-bit differences of the two transforms)...
        var bound = new float[bt * hd];
        ((IKvCodecReference)plain).MaxAbsError(rotated, bound);
        for (int i = 0; i < bt * hd; i++)
            Assert.True(Math.Abs(innerDecoded[i] - rotated[i]) <= bound[i] * 1.01 + 1e-4, $"{inner} [{i}]: inner view {innerDecoded[i]} vs rotated {rotated[i]}");
        // ...and the rotated codec's decode is that view rotated back.
        for (int t = 0; t < bt; t++)
            for (int r0 = 0; r0 < hd; r0 += n)
                for (int i = 0; i < n; i++)
                {
                    double s = 0;
                    for (int j = 0; j < n; j++) s += Hadamard.Entry(i, j) * (double)innerDecoded[t * hd + r0 + j];
                    s /= Math.Sqrt(n);
                    Assert.True(Math.Abs(decoded[t * hd + r0 + i] - s) <= 1e-5 * (1 + Math.Abs(s)), $"{inner} token {t} [{r0 + i}]: {decoded[t * hd + r0 + i]} vs {s}");
                }
        Assert.Equal(plain.BlockBytes, rot.BlockBytes);
    }

    /// <summary>An outlier channel sets a q4_0 group's scale; rotated, the outlier is spread over 64 channels and the
    /// other 63 are coded with a finer step: the mean squared error of the round trip drops.</summary>
    [Theory]
    [InlineData("q4_0")]
    [InlineData("int4")]
    public void RotationLowersErrorOnVectorsWithOutlierChannels(string inner)
    {
        const int bt = 32, hd = 64;
        var xs = CodecTestData.Tokens(bt, hd, 77);
        double Mse(string name)
        {
            var c = KvCodecRegistry.Create(name, KvSide.Key, bt, hd);
            var y = new float[bt * hd];
            c.DecodeBlock(CodecTestData.Encode(c, xs, 1), bt, y);
            double se = 0;
            for (int i = 0; i < y.Length; i++) se += (y[i] - xs[i]) * (y[i] - xs[i]);
            return se / y.Length;
        }
        double plain = Mse(inner), rot = Mse(inner + ":rot");
        Assert.True(rot < 0.8 * plain, $"{inner}: mse {plain:G4} plain, {rot:G4} rotated");
    }

    [Fact]
    public void ParsesAnyFormatAndRefusesBadNames()
    {
        Assert.IsType<RotatedSpec>(KvCodecRegistry.Parse("int2-ch:rot"));
        Assert.Equal("kivi4:rot", KvCodecRegistry.Create("kivi4:rot", KvSide.Value, 32, 64).Name);
        Assert.Contains("twice", Assert.Throws<KvSpecException>(() => KvCodecRegistry.Parse("q4_0:rot:rot")).Message);
        Assert.Contains("missing", Assert.Throws<KvSpecException>(() => KvCodecRegistry.Parse(":rot")).Message);
        Assert.Contains("lrRh+FORMAT", Assert.Throws<KvSpecException>(() => KvCodecRegistry.Parse("lr32+int4:rot")).Message);
        Assert.Contains("int5", Assert.Throws<KvSpecException>(() => KvCodecRegistry.Parse("int5:rot")).Message);
        var cfg = KvCacheConfig.Parse("q4_0:rot/int4:rot");
        Assert.Equal("q4_0:rot/int4:rot", cfg.Name);
    }
}
