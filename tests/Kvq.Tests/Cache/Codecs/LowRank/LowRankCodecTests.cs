using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.LowRank;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.LowRank;

/// <summary>The decorator against the projection written out by hand, on random data, odd ranks and head dims.</summary>
public class LowRankCodecTests
{
    private static readonly Lazy<Kvq.Cache.Codecs.KvQuant.KvQuantProfile> Profile24 =
        new(() => LowRankTestData.Profile(KvQuantTestData.Shape(2, 2, 24), tokens: 1200, latentRanks: [5, 8]));

    private static KvCodec Codec(string spec, KvSide side = KvSide.Key, int layer = 1, int head = 1, int bt = 32) =>
        KvCodecRegistry.Create(spec, new KvCodecContext(side, bt, 24, layer, head, Profile24.Value));

    /// <summary>mean + B^T g(B (x - mean)) in f64, g applied to the latent (identity, or f16 rounding).</summary>
    private static double[] ByHand(LowRankBasis basis, int rank, ReadOnlySpan<float> x, Func<float, float> latentStore)
    {
        int hd = basis.HeadDim;
        var y = basis.Mean.Select(m => (double)m).ToArray();
        for (int i = 0; i < rank; i++)
        {
            double l = 0;
            for (int c = 0; c < hd; c++) l += (double)basis.Vectors[i * hd + c] * (x[c] - basis.Mean[c]);
            double stored = latentStore((float)l);
            for (int c = 0; c < hd; c++) y[c] += stored * basis.Vectors[i * hd + c];
        }
        return y;
    }

    [Theory]
    [InlineData("lr1+f32", 1)]
    [InlineData("lr3+f32", 3)]
    [InlineData("lr7+f32", 7)]
    [InlineData("lr13+f32", 13)]
    [InlineData("lr24+f32", 24)]
    [InlineData("lr11+f16", 11)]
    public void DecodeEqualsProjectionByHand(string spec, int rank)
    {
        foreach (var side in new[] { KvSide.Key, KvSide.Value })
        {
            var codec = Codec(spec, side);
            var basis = Profile24.Value.LowRank!.For(side, 1, 1);
            Func<float, float> store = spec.EndsWith("f16") ? v => (float)(Half)v : v => v;
            const int bt = 32;
            var xs = LowRankTestData.Activations(bt, 24, 24, 77, structureSeed: 3); // layer 1 head 1 keys: structure 2, values 3; either works
            var block = CodecTestData.Encode(codec, xs, 5);
            var y = new float[bt * 24];
            codec.DecodeBlock(block, bt, y);
            for (int t = 0; t < bt; t++)
            {
                var expected = ByHand(basis, rank, xs.AsSpan(t * 24, 24), store);
                for (int c = 0; c < 24; c++)
                    Assert.True(Math.Abs(y[t * 24 + c] - expected[c]) <= 2e-5 * (1 + Math.Abs(expected[c])),
                        $"{spec} {side} token {t} channel {c}: {y[t * 24 + c]} vs {expected[c]}");
            }
        }
    }

    [Fact]
    public void FullRankF32ReconstructsTheInput()
    {
        var codec = Codec("lr24+f32");
        var xs = KvQuantTestData.Activations(32, 24, 9); // any data, not only the calibrated structure
        var y = new float[xs.Length];
        codec.DecodeBlock(CodecTestData.Encode(codec, xs, 1), 32, y);
        for (int i = 0; i < xs.Length; i++) Assert.True(Math.Abs(y[i] - xs[i]) < 1e-4 * (1 + Math.Abs(xs[i])), $"{i}: {y[i]} vs {xs[i]}");
    }

    [Fact]
    public void ErrorFallsWithRankOnCalibratedStructure()
    {
        var xs = LowRankTestData.Activations(32, 48, 24, 123, structureSeed: 2); // layer 1 keys (heads 0 and 1)
        double previous = double.MaxValue;
        foreach (int rank in new[] { 1, 2, 4, 6, 12, 24 })
        {
            var codec = Codec($"lr{rank}+f32", head: 0);
            var head0 = new float[32 * 24];
            for (int t = 0; t < 32; t++) xs.AsSpan(t * 48, 24).CopyTo(head0.AsSpan(t * 24));
            var y = new float[head0.Length];
            codec.DecodeBlock(CodecTestData.Encode(codec, head0, 2), 32, y);
            double mse = 0;
            for (int i = 0; i < y.Length; i++) mse += (y[i] - head0[i]) * (y[i] - head0[i]);
            Assert.True(mse <= previous * 1.0001, $"rank {rank}: squared error {mse} > {previous}");
            if (rank == 6) Assert.True(mse < 0.05 * y.Length, $"six strong directions should leave only the 0.1 noise, got mse {mse / y.Length}");
            previous = mse;
        }
    }

    [Fact]
    public void ComposesWithWholeBlockLatentCodec()
    {
        // int4-ch scales each latent channel over the block: the decorator hands the whole block's latents over.
        var codec = Codec("lr8+int4-ch");
        var inner = KvCodecRegistry.Create("int4-ch", KvSide.Key, 32, 8);
        Assert.True(codec.EncodesWholeBlocks);
        Assert.Equal(inner.BlockLayout, codec.BlockLayout);
        var lr = (LowRankCodec)codec;
        var xs = LowRankTestData.Activations(32, 24, 24, 4, structureSeed: 3);
        var latents = new float[32 * 8];
        var centered = new float[24];
        for (int t = 0; t < 32; t++) lr.Projection.Project(xs.AsSpan(t * 24, 24), latents.AsSpan(t * 8, 8), centered);
        var innerBlock = new byte[inner.BlockBytes];
        inner.EncodeBlock(latents, innerBlock);
        var block = new byte[codec.BlockBytes];
        codec.EncodeBlock(xs, block);
        Assert.Equal(innerBlock, block);
    }

    [Fact]
    public void LayoutIsTheLatentCodecsAndKeysArePreRope()
    {
        var k = Codec("lr12+f16");
        Assert.Equal(KvBytes.CodesOnly(2L * 32 * 12), k.BlockLayout);
        Assert.Equal(8.0, k.BitsPerElement, 12); // 16 bits x 12/24
        Assert.True(k.PreRope);
        Assert.False(Codec("lr12+f16", KvSide.Value).PreRope);
        Assert.Equal("lr12+f16", k.Name);
        Assert.Equal(24, k.HeadDim);
    }

    [Fact]
    public void LayersAndHeadsUseTheirOwnBasis()
    {
        var a = (LowRankCodec)Codec("lr4+f16", layer: 0, head: 1);
        var b = (LowRankCodec)Codec("lr4+f16", layer: 1, head: 1);
        var v = (LowRankCodec)Codec("lr4+f16", KvSide.Value, layer: 1, head: 1);
        Assert.Equal(Profile24.Value.LowRank!.For(KvSide.Key, 0, 1).Vectors.AsSpan(0, 4 * 24).ToArray(), a.Projection.Basis);
        Assert.NotEqual(a.Projection.Basis, b.Projection.Basis);
        Assert.NotEqual(b.Projection.Basis, v.Projection.Basis);
    }

    [Theory]
    [InlineData("lr32", "lrR+FORMAT")]
    [InlineData("lr0+f16", "rank '0'")]
    [InlineData("lr-3+f16", "unknown KV format")]
    [InlineData("lr12+", "format is missing")]
    [InlineData("lr8+lr4+f16", "cannot itself be low-rank")]
    [InlineData("lr25+f16", "rank 25 exceeds head dim 24 (keys of layer 1, KV head 1)")]
    [InlineData("lr8+nope", "latent format 'nope' at head dim 8 (keys of layer 1, KV head 1): unknown KV format 'nope'")]
    [InlineData("lr8+q4_0", "latent format 'q4_0'")]
    [InlineData("lr12h+f16", "power-of-two rank, not 12")]
    [InlineData("lrh+f16", "unknown KV format")]
    public void BadSpecsAreTypedErrors(string spec, string message)
    {
        var e = Assert.Throws<KvSpecException>(() => Codec(spec));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void NeedsAProfileWithBases()
    {
        var e = Assert.Throws<KvSpecException>(() => KvCodecRegistry.Create("lr8+f16", new KvCodecContext(KvSide.Key, 32, 24, 2, 0)));
        Assert.Contains("kvq calibrate --lowrank", e.Message);
        Assert.Contains("layer 2, KV head 0", e.Message);
        var plain = KvQuantTestData.Profile(KvQuantTestData.Shape(1, 1, 24), tokens: 300);
        e = Assert.Throws<KvSpecException>(() => KvCodecRegistry.Create("lr8+f16", new KvCodecContext(KvSide.Value, 32, 24, 0, 0, plain)));
        Assert.Contains("low-rank bases", e.Message);
        e = Assert.Throws<KvSpecException>(() => KvCodecRegistry.Create("lr8+f16", new KvCodecContext(KvSide.Key, 32, 24, 2, 0, Profile24.Value)));
        Assert.Contains("2 layers x 2 KV heads x head dim 24", e.Message);
        e = Assert.Throws<KvSpecException>(() => KvCodecRegistry.Create("lr8+f16", new KvCodecContext(KvSide.Key, 32, 16, 0, 0, Profile24.Value)));
        Assert.Contains("head dim 16", e.Message);
    }

    [Fact]
    public void HadamardLatentSpansTheSameSubspaceWithEvenChannelVariance()
    {
        var plain = (LowRankCodec)Codec("lr8+f32");
        var rotated = (LowRankCodec)Codec("lr8h+f32");
        var b = rotated.Projection.Basis;
        for (int i = 0; i < 8; i++)
            for (int j = i; j < 8; j++)
            {
                double dot = 0;
                for (int c = 0; c < 24; c++) dot += (double)b[i * 24 + c] * b[j * 24 + c];
                Assert.True(Math.Abs(dot - (i == j ? 1 : 0)) < 1e-5, $"rows {i}, {j}: {dot}");
            }
        var both = LowRankTestData.Activations(32, 48, 24, 8, structureSeed: 2); // layer 1 keys; the codecs are head 1's
        var xs = new float[32 * 24];
        for (int t = 0; t < 32; t++) both.AsSpan(t * 48 + 24, 24).CopyTo(xs.AsSpan(t * 24));
        var y1 = new float[xs.Length];
        var y2 = new float[xs.Length];
        plain.DecodeBlock(CodecTestData.Encode(plain, xs, 1), 32, y1);
        rotated.DecodeBlock(CodecTestData.Encode(rotated, xs, 1), 32, y2);
        for (int i = 0; i < xs.Length; i++) Assert.True(Math.Abs(y1[i] - y2[i]) < 1e-4 * (1 + Math.Abs(y1[i])), $"{i}: {y1[i]} vs {y2[i]}");
        // Channel variances of the latent: principal coordinates fall off (scales 4, 2, 1, ...); rotated ones are level.
        double Spread(LowRankCodec c)
        {
            var v = new double[8];
            var latent = new float[8];
            var centered = new float[24];
            for (int t = 0; t < 32; t++)
            {
                c.Projection.Project(xs.AsSpan(t * 24, 24), latent, centered);
                for (int i = 0; i < 8; i++) v[i] += latent[i] * latent[i];
            }
            return v.Max() / v.Min();
        }
        Assert.True(Spread(plain) > 100, $"plain spread {Spread(plain)}");
        Assert.True(Spread(rotated) < 10, $"rotated spread {Spread(rotated)}");
    }

    [Fact]
    public void NuqLatentUsesTheLatentCalibrationOfItsRank()
    {
        // lr5+nuq3-1% must be exactly NuqChannelCodec over the latent, with the rank-5 latent's scales and codebook.
        var codec = (LowRankCodec)Codec("lr5+nuq3-1%", layer: 1, head: 0);
        var latentProfile = Profile24.Value.LatentProfile(5)!;
        var nuq = KvCodecRegistry.Create("nuq3-1%", new KvCodecContext(KvSide.Key, 32, 5, 1, 0, latentProfile));
        Assert.Equal(nuq.BlockLayout, codec.BlockLayout);
        Assert.Equal(nuq.GetType(), codec.Inner.GetType());
        var xs = LowRankTestData.Activations(32, 24, 24, 6, structureSeed: 2);
        var latents = new float[32 * 5];
        var centered = new float[24];
        for (int t = 0; t < 32; t++) codec.Projection.Project(xs.AsSpan(t * 24, 24), latents.AsSpan(t * 5, 5), centered);
        var expected = new byte[nuq.BlockBytes];
        var expectedRows = new BlockOutliers();
        for (int t = 0; t < 32; t++) nuq.EncodeToken(latents.AsSpan(t * 5, 5), expected, expectedRows, t);
        var actual = new byte[codec.BlockBytes];
        var actualRows = new BlockOutliers();
        for (int t = 0; t < 32; t++) codec.EncodeToken(xs.AsSpan(t * 24, 24), actual, actualRows, t);
        Assert.Equal(expected, actual);
        Assert.True(codec.HasBlockOutliers);
        Assert.Equal(expectedRows.Raw.ToArray(), actualRows.Raw.ToArray());
        // Rank 8 has its own calibration; rank 6 has none: nuq refuses with a hint, f16 latents still work.
        Assert.Equal(8, ((LowRankCodec)Codec("lr8+nuq2")).Inner.HeadDim);
        var e = Assert.Throws<KvSpecException>(() => Codec("lr6+nuq3-1%"));
        Assert.Contains("--lowrank-nuq 6", e.Message);
        e = Assert.Throws<KvSpecException>(() => Codec("lr8h+nuq3-1%"));
        Assert.Contains("without h", e.Message);
        Codec("lr6+f16");
    }

    [Fact]
    public void SpecParsing()
    {
        Assert.Null(LowRankSpec.TryParse("f16"));
        Assert.Null(LowRankSpec.TryParse("lr"));
        Assert.Null(LowRankSpec.TryParse("lrx+f16"));
        Assert.Equal(new LowRankSpec("lr32+nuq4-1%", 32, "nuq4-1%"), LowRankSpec.TryParse("lr32+nuq4-1%"));
        Assert.Equal(new LowRankSpec("lr16h+int4", 16, "int4", Hadamard: true), LowRankSpec.TryParse("lr16h+int4"));
        var cfg = KvCacheConfig.Parse("lr32+int4/f16");
        Assert.Equal(("lr32+int4", "f16"), (cfg.KeyFormat, cfg.ValueFormat));
    }
}
