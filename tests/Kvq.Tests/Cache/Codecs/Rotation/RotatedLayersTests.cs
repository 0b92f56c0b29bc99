using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Codecs.Rotation;
using Kvq.Calibration;
using Kvq.Calibration.KvQuant;
using Kvq.Tensors;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.Rotation;

/// <summary><c>FORMAT:rot@L.L</c>: the rotation in the listed layers only (a per-layer rotation choice). Each layer
/// must attend exactly as the whole-cache format it stands for: the rotated format in a listed layer, the plain one
/// elsewhere.</summary>
public class RotatedLayersTests
{
    private static KvQuantProfile RotatedProfile(KvShape shape, int tokens = 1200)
    {
        var acts = RotatedActivations.Rotate(KvQuantTestData.ActivationSet(shape, tokens, 1, weighted: true));
        var cals = KvQuantFitter.Fit(acts, new KvQuantFitOptions([0.01], Seed: 7, Threads: 1, Bins: 4096, Restarts: 1));
        var settings = new KvQuantCalibrationSettings("synthetic" + RotatedSpec.ProfileTextMarker, new string('0', 64), 1, tokens, 1, 7, true);
        return new KvQuantProfile("test-model", settings, shape.Layers, shape.KvHeads, shape.HeadDim, cals);
    }

    [Theory]
    [InlineData("q4_0:rot@1", "q4_0", "q4_0:rot", 3, 64)]
    [InlineData("int4:rot@0.2", "int4:rot", "int4", 3, 96)]          // head dim 96: three 32-point rotations per head
    [InlineData("nuq3-1%:rot@1", "nuq3-1%", "nuq3-1%:rot", 3, 64)]
    [InlineData("nuq2-1%:mixed:rot@0.2/nuq3-1%:rot@1", "nuq2-1%:mixed:rot/nuq3-1%", "nuq2-1%:mixed/nuq3-1%:rot", 3, 64)]
    public void EachLayerAttendsAsTheFormatItStandsFor(string spec, string evenLayers, string oddLayers, int layers, int headDim)
    {
        const int kvHeads = 2, n = 53;
        var shape = KvQuantTestData.Shape(layers, kvHeads, headDim, groupSize: 3);
        var profile = spec.StartsWith("nuq", StringComparison.Ordinal) ? RotatedProfile(shape) : null;
        var k = KvQuantTestData.Activations(n, shape.KvDim, 21);
        var v = KvQuantTestData.Activations(n, shape.KvDim, 22);
        var q = KvQuantTestData.Activations(n, shape.QDim, 23);
        float[][] Attend(string s)
        {
            var cache = new PagedKvCache(shape, KvCacheConfig.Parse(s) with { Profile = profile, SinkTokens = 1 });
            using var seq = cache.CreateSequence();
            seq.BeginChunk(Enumerable.Range(0, n).ToArray());
            var outs = new float[layers][];
            for (int l = 0; l < layers; l++)
            {
                seq.Append(l, k, v, n);
                outs[l] = new float[n * shape.QDim];
                seq.Attend(l, q, n, outs[l], new Parallelism(2));
            }
            seq.Commit(n);
            return outs;
        }
        var got = Attend(spec);
        var even = Attend(evenLayers);
        var odd = Attend(oddLayers);
        for (int l = 0; l < layers; l++) Assert.Equal(l % 2 == 0 ? even[l] : odd[l], got[l]);
        Assert.NotEqual(even[1], odd[1]);                // the two formats differ: the check can tell them apart
    }

    [Fact]
    public void ParsesTheLayerListAndRefusesBadOnes()
    {
        var s = Assert.IsType<RotatedSpec>(KvCodecRegistry.Parse("nuq3-1%:mixed:rot@4.2"));
        Assert.Equal([2, 4], s.OnlyLayers!);
        Assert.True(s.Rotates(2) && s.Rotates(4) && !s.Rotates(3));
        Assert.IsType<KvQuantSpec>(s.Inner);
        Assert.Null(Assert.IsType<RotatedSpec>(KvCodecRegistry.Parse("q4_0:rot")).OnlyLayers);
        foreach (var bad in new[] { "q4_0:rot@", "q4_0:rot@x", "q4_0:rot@1.1", "q4_0:rot@1..2", "q4_0:rot@-1" })
            Assert.Contains("rot@", Assert.Throws<KvSpecException>(() => KvCodecRegistry.Parse(bad)).Message);
        var shape = KvQuantTestData.Shape(2, 2, 64);
        var e = Assert.Throws<KvSpecException>(() => new PagedKvCache(shape, KvCacheConfig.Parse("q4_0:rot@2")));
        Assert.Contains("layer 2", e.Message);
    }
}
