using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Formats;
using Kvq.Tests.Cache.Codecs.KvQuant;
using Kvq.Tests.Cache.Codecs.LowRank;

namespace Kvq.Tests.Calibration.KvQuant;

/// <summary>Version 3 of the profile file (codebooks carry their calibration error) and the :mixed widths drawn from it.</summary>
public sealed class KvQuantProfileSensitivityTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-sens-profile-" + Guid.NewGuid().ToString("N"));
    private static readonly Lazy<KvQuantProfile> Fitted = new(() =>
        LowRankTestData.Profile(KvQuantTestData.Shape(3, 2, 16), tokens: 600, latentRanks: [8]));

    public KvQuantProfileSensitivityTests() => Directory.CreateDirectory(_dir);
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static KvQuantCalibration WithoutSensitivities(KvQuantCalibration c) =>
        new(c.OutlierFraction, c.KeysPreRope, c.KeysPostRope,
            c.Codebooks.Select(b => (b.Stream, b.Layer, new NuqCodebook(b.Codebook.Levels, b.Codebook.NormScale, b.Codebook.NormOffset))));

    public static KvQuantProfile WithoutSensitivities(KvQuantProfile p)
    {
        var plain = new KvQuantProfile(p.ModelFingerprint, p.Settings, p.Layers, p.KvHeads, p.HeadDim,
            p.Calibrations.Select(WithoutSensitivities).ToList());
        return p.LowRank is { } lr
            ? plain.WithLowRank(lr.WithLatent(lr.Latent.Select(e => (e.Rank, (IReadOnlyList<KvQuantCalibration>)e.Calibrations.Select(WithoutSensitivities).ToList())).ToList()))
            : plain;
    }

    private string Saved(KvQuantProfile p, string name)
    {
        var path = Path.Combine(_dir, name);
        p.Save(path);
        return path;
    }

    [Fact]
    public void FittedCodebooksCarryTheirErrorWhichFallsWithBits()
    {
        var p = Fitted.Value;
        foreach (var cal in p.Calibrations)
            foreach (var stream in KvQuantStreams.All)
                for (int l = 0; l < p.Layers; l++)
                {
                    var e = KvQuantProfile.BitWidths.Select(b => cal.Codebook(stream, l, b)!.Sensitivity).ToArray();
                    Assert.All(e, x => Assert.True(double.IsFinite(x) && x >= 0, $"{stream} layer {l}: {x}"));
                    for (int i = 1; i < e.Length; i++)
                        Assert.True(e[i - 1] > e[i], $"{stream} layer {l}: {string.Join(", ", e)} should fall with bits");
                }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Version3RoundTripsSensitivitiesWithAndWithoutLowRank(bool lowRank)
    {
        var p = Fitted.Value;
        if (!lowRank) p = new KvQuantProfile(p.ModelFingerprint, p.Settings, p.Layers, p.KvHeads, p.HeadDim, p.Calibrations);
        var path = Saved(p, "v3.kvqp");
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(3u, BitConverter.ToUInt32(bytes, 8));
        var q = KvQuantProfile.Load(path, p.ModelFingerprint);
        Assert.Equal(lowRank, q.LowRank != null);
        for (int i = 0; i < p.Calibrations.Count; i++)
            Assert.Equal(p.Calibrations[i].Codebooks.Select(c => c.Codebook.Sensitivity),
                         q.Calibrations[i].Codebooks.Select(c => c.Codebook.Sensitivity));
        if (lowRank)
            Assert.Equal(p.LowRank!.Latent[0].Calibrations[0].Codebooks.Select(c => c.Codebook.Sensitivity),
                         q.LowRank!.Latent[0].Calibrations[0].Codebooks.Select(c => c.Codebook.Sensitivity));
        Assert.Equal(bytes, File.ReadAllBytes(Saved(q, "again.kvqp")));
        // Without sensitivities the same profile is version 1 (or 2), readable by older builds.
        var old = File.ReadAllBytes(Saved(WithoutSensitivities(p), "old.kvqp"));
        Assert.Equal(lowRank ? 2u : 1u, BitConverter.ToUInt32(old, 8));
    }

    [Fact]
    public void BadPresenceFlagIsATypedError()
    {
        var p = Fitted.Value;
        var plain = new KvQuantProfile(p.ModelFingerprint, p.Settings, p.Layers, p.KvHeads, p.HeadDim, p.Calibrations);
        var body = File.ReadAllBytes(Saved(plain, "flag.kvqp"))[..^32];
        body[^1] = 7;   // the low-rank presence flag is the body's last byte when there is no section
        var path = Path.Combine(_dir, "bad.kvqp");
        File.WriteAllBytes(path, [.. body, .. System.Security.Cryptography.SHA256.HashData(body)]);
        Assert.Equal("low-rank present", Assert.Throws<ModelFormatException>(() => KvQuantProfile.Load(path)).Item);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(2)]
    public void MixedWidthsFollowTheAllocationAndKeepTheMean(int mean)
    {
        var p = Fitted.Value;
        foreach (var side in new[] { KvSide.Key, KvSide.Value })
        {
            var stream = side == KvSide.Key ? KvQuantStream.KeyChannelPreRope : KvQuantStream.Value;
            var cal = p.For(0.01, "test");
            var sens = Enumerable.Range(0, p.Layers).Select(l =>
                (IReadOnlyList<double>)KvQuantProfile.MixedWidths(mean).Select(b => cal.Codebook(stream, l, b)!.Sensitivity).ToArray()).ToArray();
            var expected = KvQuantBitAllocation.Allocate(sens, KvQuantProfile.MixedWidths(mean), mean);
            var config = KvCacheConfig.Parse($"nuq{mean}-1%:mixed") with { Profile = p };
            var bits = Enumerable.Range(0, p.Layers).Select(l =>
            {
                var codecs = Enumerable.Range(0, p.KvHeads).Select(h => config.CreateCodec(side, l, h, p.HeadDim)).ToArray();
                var widths = codecs.Select(c => c is NuqChannelCodec k ? k.Codebook.Bits : ((NuqTokenCodec)c).Codebook.Bits).Distinct().ToArray();
                return Assert.Single(widths);
            }).ToArray();
            Assert.Equal(expected, bits);
            Assert.Equal(mean * p.Layers, bits.Sum());
            Assert.All(bits, b => Assert.InRange(b, mean - 1, mean + 1));
        }
    }

    [Fact]
    public void MixedNeedsSensitivities()
    {
        var config = KvCacheConfig.Parse("nuq3-1%:mixed") with { Profile = WithoutSensitivities(Fitted.Value) };
        var e = Assert.Throws<KvSpecException>(() => config.CreateCodec(KvSide.Key, 0, 0, 16));
        Assert.Contains("kvq calibrate", e.Message);
        Assert.Contains("uniform", Assert.Throws<KvSpecException>(() => KvQuantSpec.TryParse("nuq3-1%:mixed:uniform")).Message);
    }

    /// <summary>The fitted profile with chosen sensitivities: layer 0 far more sensitive than layer 2.</summary>
    private static KvQuantProfile Skewed()
    {
        var p = Fitted.Value;
        static double Sens(int layer, int bits) => Math.Pow(10, 2 - layer) * Math.Pow(4, -bits);
        var cals = p.Calibrations.Select(c => new KvQuantCalibration(c.OutlierFraction, c.KeysPreRope, c.KeysPostRope,
            c.Codebooks.Select(b => (b.Stream, b.Layer, new NuqCodebook(b.Codebook.Levels, b.Codebook.NormScale, b.Codebook.NormOffset,
                Sens(b.Layer, b.Codebook.Bits)))))).ToList();
        return new KvQuantProfile(p.ModelFingerprint, p.Settings, p.Layers, p.KvHeads, p.HeadDim, cals);
    }

    [Fact]
    public void LayersOfDifferentWidthsShareOneCacheAndItsByteAccounting()
    {
        var p = Skewed();
        var shape = KvQuantTestData.Shape(p.Layers, p.KvHeads, p.HeadDim);
        var cache = new PagedKvCache(shape, KvCacheConfig.Parse("nuq3-1%:mixed") with { Profile = p, SinkTokens = 1 });
        int[] widths = [.. Enumerable.Range(0, p.Layers).Select(l => ((NuqChannelCodec)cache.KeyCodecs[l][0]).Codebook.Bits)];
        Assert.Equal([4, 3, 2], widths);
        Assert.True(cache.KeyLayout(0).Total > cache.KeyLayout(1).Total && cache.KeyLayout(1).Total > cache.KeyLayout(2).Total);
        const int n = 70;
        using var seq = cache.CreateSequence();
        var k = KvQuantTestData.Activations(n, shape.KvDim, 21);
        var v = KvQuantTestData.Activations(n, shape.KvDim, 22);
        var q = KvQuantTestData.Activations(n, shape.QDim, 23);
        seq.BeginChunk(new int[n]);
        var outputs = new float[p.Layers][];
        for (int l = 0; l < p.Layers; l++)
        {
            seq.Append(l, k, v, n);
            outputs[l] = new float[n * shape.QDim];
            seq.Attend(l, q, n, outputs[l], new Kvq.Tensors.Parallelism(2));
            Assert.All(outputs[l], x => Assert.True(float.IsFinite(x)));
        }
        seq.Commit(n);
        // Same inputs in every layer: the 4-bit layer's output is closest to exact attention over the inputs.
        var exact = new float[n * shape.QDim];
        var f32 = new PagedKvCache(shape, KvCacheConfig.Parse("f32"));
        using (var s32 = f32.CreateSequence())
        {
            s32.BeginChunk(new int[n]);
            s32.Append(0, k, v, n);
            s32.Attend(0, q, n, exact, new Kvq.Tensors.Parallelism(1));
        }
        double Err(float[] o) => o.Select((x, i) => (double)(x - exact[i]) * (x - exact[i])).Sum();
        Assert.True(Err(outputs[0]) < Err(outputs[1]) && Err(outputs[1]) < Err(outputs[2]),
            $"errors by layer (4, 3, 2 bits): {Err(outputs[0])}, {Err(outputs[1])}, {Err(outputs[2])}");
        long blocks = (n + 31) / 32;
        var mem = seq.Memory();
        long keys = Enumerable.Range(0, p.Layers).Sum(l => cache.KeyLayout(l).Total * blocks * p.KvHeads);
        long values = Enumerable.Range(0, p.Layers).Sum(l => cache.ValueLayout(l).Total * blocks * p.KvHeads);
        // Plus the sparse outlier rows beside the blocks, counted as held.
        long keyRows = Enumerable.Range(0, p.Layers).Sum(l => cache.Keys[l].OutlierBytes);
        long valueRows = Enumerable.Range(0, p.Layers).Sum(l => cache.Values[l].OutlierBytes);
        Assert.True(keyRows > 0 && valueRows > 0);
        Assert.Equal(keys + keyRows, mem.Keys.Total);
        Assert.Equal(values + valueRows, mem.Values.Total);
        Assert.Equal(blocks * cache.BytesPerBlock, keys + values);
    }
}
