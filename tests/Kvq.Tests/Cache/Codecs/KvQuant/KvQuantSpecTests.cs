using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

public class KvQuantSpecTests
{
    [Theory]
    [InlineData("nuq4", 4, 0.0, false, KeyScaling.PerChannel, false, false)]
    [InlineData("nuq3-1%", 3, 0.01, false, KeyScaling.PerChannel, false, false)]
    [InlineData("nuq3-0.5%", 3, 0.005, false, KeyScaling.PerChannel, false, false)]
    [InlineData("nuq2-1%", 2, 0.01, false, KeyScaling.PerChannel, false, false)]
    [InlineData("nuq2-1%:qnorm", 2, 0.01, false, KeyScaling.PerChannel, false, true)]
    [InlineData("nuq2-1%:noqnorm", 2, 0.01, false, KeyScaling.PerChannel, false, false)]
    [InlineData("nuq3-1%:qnorm", 3, 0.01, false, KeyScaling.PerChannel, false, true)]
    [InlineData("nuq3-1%:uniform", 3, 0.01, true, KeyScaling.PerChannel, false, false)]
    [InlineData("nuq3:token:post", 3, 0.0, false, KeyScaling.PerToken, true, false)]
    public void Parses(string name, int bits, double fraction, bool uniform, KeyScaling scaling, bool post, bool qnorm)
    {
        var s = KvQuantSpec.TryParse(name)!;
        Assert.Equal(name, s.Name);
        Assert.Equal(bits, s.Bits);
        Assert.Equal(fraction, s.OutlierFraction, 12);
        Assert.Equal(uniform, s.Uniform);
        Assert.Equal(scaling, s.KeyScaling);
        Assert.Equal(post, s.PostRope);
        Assert.Equal(qnorm, s.QNorm);
    }

    [Theory]
    [InlineData("nuq5")]
    [InlineData("nuq1-1%")]
    [InlineData("nuq3-1")]
    [InlineData("nuq3-0%")]
    [InlineData("nuq3-60%")]
    [InlineData("nuq3-x%")]
    [InlineData("nuq3-1%:bogus")]
    [InlineData("nuq3-1%:uniform:qnorm")]
    [InlineData("nuq3:slots4")]
    [InlineData("nuq3-1%:slots0")]
    [InlineData("nuq3-1%:w3363")]
    [InlineData("nuq3-1%:w3303")]
    [InlineData("nuq3-1%:w3333:mixed")]
    [InlineData("nuq3-1%:w3333:uniform")]
    public void RejectsMalformedNames(string name) => Assert.Throws<KvSpecException>(() => KvQuantSpec.TryParse(name));

    [Fact]
    public void OtherNamesAreNotOurs()
    {
        Assert.Null(KvQuantSpec.TryParse("f16"));
        Assert.Null(KvQuantSpec.TryParse("int4"));
    }

    [Fact]
    public void RegistryCreatesTheFamilyFromAProfile()
    {
        var shape = KvQuantTestData.Shape(2, 2, 16);
        var profile = KvQuantTestData.Profile(shape, tokens: 300);
        var cfg = KvCacheConfig.Parse("nuq3-1%") with { Profile = profile };
        Assert.IsType<NuqChannelCodec>(cfg.CreateCodec(KvSide.Key, 1, 1, 16));
        Assert.IsType<NuqTokenCodec>(cfg.CreateCodec(KvSide.Value, 1, 1, 16));
        Assert.True(cfg.CreateCodec(KvSide.Key, 0, 0, 16).PreRope);
        Assert.False((KvCacheConfig.Parse("nuq3-1%:post") with { Profile = profile }).CreateCodec(KvSide.Key, 0, 0, 16).PreRope);
        Assert.IsType<NuqTokenCodec>((KvCacheConfig.Parse("nuq3-1%:token") with { Profile = profile }).CreateCodec(KvSide.Key, 0, 0, 16));
        Assert.Contains(KvCodecRegistry.Formats, f => f.Name == "nuq3");
    }

    [Fact]
    public void MissingOrMismatchedCalibrationIsASpecError()
    {
        var shape = KvQuantTestData.Shape(2, 2, 16);
        var profile = KvQuantTestData.Profile(shape, tokens: 300);
        var noProfile = Assert.Throws<KvSpecException>(() => KvCacheConfig.Parse("nuq3-1%").CreateCodec(KvSide.Key, 0, 0, 16));
        Assert.Contains("profile", noProfile.Message);
        var fraction = Assert.Throws<KvSpecException>(() => (KvCacheConfig.Parse("nuq3-0.5%") with { Profile = profile }).CreateCodec(KvSide.Key, 0, 0, 16));
        Assert.Contains("0.5%", fraction.Message);
        var geometry = Assert.Throws<KvSpecException>(() => (KvCacheConfig.Parse("nuq3-1%") with { Profile = profile }).CreateCodec(KvSide.Key, 2, 0, 16));
        Assert.Contains("2 layers", geometry.Message);
        // Uniform values need no profile at all.
        Assert.IsType<NuqTokenCodec>(KvCacheConfig.Parse("nuq3-1%:uniform").CreateCodec(KvSide.Value, 0, 0, 16));
    }

    [Fact]
    public void ClipJointAndExplicitWidthsParse()
    {
        var clip = KvQuantSpec.TryParse("nuq3-1%:clip")!;
        Assert.True(clip.Clip);
        Assert.False(clip.Mixed);
        var joint = KvQuantSpec.TryParse("nuq2-1%:mixedkv")!;
        Assert.True(joint.Mixed && joint.Joint);
        Assert.False(KvQuantSpec.TryParse("nuq2-1%:mixed")!.Joint);
        Assert.Equal([3, 5, 1, 2], KvQuantSpec.TryParse("nuq3-1%:w3512")!.LayerBits!);
        var fit = KvQuantSpec.TryParse("nuq2-1%:mixedkv:qnorm:fit")!;
        Assert.True(fit.Fit && fit.Mixed && fit.Joint && fit.QNorm);
        Assert.False(fit.Clip);
        Assert.False(clip.Fit);
        var both = Assert.Throws<KvSpecException>(() => KvQuantSpec.TryParse("nuq2-1%:clip:fit"));
        Assert.Contains("nuq2-1%:clip:fit", both.Message);
        Assert.Equal(KvQuantSpec.ValueOutlierMargin, clip.ValueMargin);
        Assert.Equal(1.25f, KvQuantSpec.TryParse("nuq2-1%:mixedkv:margin1.25")!.ValueMargin);
        Assert.Equal(1.25f, (KvQuantSpec.TryParse("nuq2-1%:mixed:margin1.25")! with { Bits = 3, Allocated = true }).ValueMargin);
        foreach (var bad in new[] { "nuq2-1%:margin", "nuq2-1%:margin0", "nuq2-1%:margin-1", "nuq2-1%:marginx", "nuq2:margin1.2" })
            Assert.Contains(bad, Assert.Throws<KvSpecException>(() => KvQuantSpec.TryParse(bad)).Message);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void JointWidthsKeepTheMeanOverBothSidesAndExplicitWidthsAreTaken(int bits)
    {
        var shape = KvQuantTestData.Shape(4, 2, 16);
        var profile = KvQuantTestData.Profile(shape, tokens: 300, weighted: true);
        var spec = KvQuantSpec.TryParse($"nuq{bits}-1%:mixedkv")!;
        var keys = spec.ForLayers(new KvCodecContext(KvSide.Key, 32, 16, 0, 0, profile), 4).Cast<KvQuantSpec>().Select(s => s.Bits).ToArray();
        var values = spec.ForLayers(new KvCodecContext(KvSide.Value, 32, 16, 0, 0, profile), 4).Cast<KvQuantSpec>().Select(s => s.Bits).ToArray();
        Assert.Equal(2 * 4 * bits, keys.Sum() + values.Sum());
        Assert.All(keys.Concat(values), b => Assert.InRange(b, Math.Max(1, bits - 1), bits + 1));
        // The joint optimum is never worse than the two sides' separate optima (same objective, a larger feasible set).
        double Cost(int[] k, int[] v)
        {
            var cal = profile.For(0.01, "t");
            double e = 0;
            for (int l = 0; l < 4; l++)
                e += cal.Codebook(KvQuantStream.KeyChannelPreRope, l, k[l])!.Sensitivity + cal.Codebook(KvQuantStream.Value, l, v[l])!.Sensitivity;
            return e;
        }
        var sep = KvQuantSpec.TryParse($"nuq{bits}-1%:mixed")!;
        var sk = sep.ForLayers(new KvCodecContext(KvSide.Key, 32, 16, 0, 0, profile), 4).Cast<KvQuantSpec>().Select(s => s.Bits).ToArray();
        var sv = sep.ForLayers(new KvCodecContext(KvSide.Value, 32, 16, 0, 0, profile), 4).Cast<KvQuantSpec>().Select(s => s.Bits).ToArray();
        Assert.True(Cost(keys, values) <= Cost(sk, sv) * (1 + 1e-12));

        var explicitWidths = KvQuantSpec.TryParse("nuq3-1%:w5132")!;
        var w = explicitWidths.ForLayers(new KvCodecContext(KvSide.Value, 32, 16, 0, 0, profile), 4).Cast<KvQuantSpec>().Select(s => s.Bits);
        Assert.Equal([5, 1, 3, 2], w);
        var wrongCount = Assert.Throws<KvSpecException>(() =>
            KvQuantSpec.TryParse("nuq3-1%:w333")!.ForLayers(new KvCodecContext(KvSide.Key, 32, 16, 0, 0, profile), 4));
        Assert.Contains("3 layer widths", wrongCount.Message);
    }
}
