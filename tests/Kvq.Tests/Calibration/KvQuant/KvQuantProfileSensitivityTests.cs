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
                    Assert.True(e[0] > e[1] && e[1] > e[2], $"{stream} layer {l}: {string.Join(", ", e)} should fall with bits");
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

    [Fact]
    public void MixedWidthsFollowTheAllocationAndKeepTheMean()
    {
        var p = Fitted.Value;
        foreach (var side in new[] { KvSide.Key, KvSide.Value })
        {
            var stream = side == KvSide.Key ? KvQuantStream.KeyChannelPreRope : KvQuantStream.Value;
            var cal = p.For(0.01, "test");
            var sens = Enumerable.Range(0, p.Layers).Select(l =>
                (IReadOnlyList<double>)KvQuantProfile.BitWidths.Select(b => cal.Codebook(stream, l, b)!.Sensitivity).ToArray()).ToArray();
            var expected = KvQuantBitAllocation.Allocate(sens, KvQuantProfile.BitWidths, 3);
            var config = KvCacheConfig.Parse("nuq3-1%:mixed") with { Profile = p };
            var bits = Enumerable.Range(0, p.Layers).Select(l =>
            {
                var codecs = Enumerable.Range(0, p.KvHeads).Select(h => config.CreateCodec(side, l, h, p.HeadDim)).ToArray();
                var widths = codecs.Select(c => c is NuqChannelCodec k ? k.Codebook.Bits : ((NuqTokenCodec)c).Codebook.Bits).Distinct().ToArray();
                return Assert.Single(widths);
            }).ToArray();
            Assert.Equal(expected, bits);
            Assert.Equal(3 * p.Layers, bits.Sum());
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
}
