using Kvq.Cache.Codecs.KvQuant;
using Kvq.Calibration;
using Kvq.Calibration.KvQuant;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Calibration.KvQuant;

public class KvQuantFitterTests
{
    [Fact]
    public void PercentileInterpolatesLikeNumpy()
    {
        float[] a = [1, 2, 3, 4, 10];
        Assert.Equal(1f, KvQuantFitter.Percentile(a, 0));
        Assert.Equal(10f, KvQuantFitter.Percentile(a, 1));
        Assert.Equal(3f, KvQuantFitter.Percentile(a, 0.5));
        Assert.Equal(9.76f, KvQuantFitter.Percentile(a, 0.99), 4);   // numpy.percentile([1,2,3,4,10], 99) = 9.76
        Assert.Equal(1.04f, KvQuantFitter.Percentile(a, 0.01), 4);
    }

    [Fact]
    public void ChannelScaleUsesBothTails()
    {
        var col = Enumerable.Range(0, 1001).Select(i => (float)i).ToArray();   // 0..1000
        var (z, r) = KvQuantFitter.ChannelScale(col, 0.01);                  // 0.5% each side: 5 and 995
        Assert.Equal(500f, z, 3);
        Assert.Equal(495f, r, 3);
        (z, r) = KvQuantFitter.ChannelScale(col, 0);
        Assert.Equal(500f, z);
        Assert.Equal(500f, r);
        (_, r) = KvQuantFitter.ChannelScale([2f, 2f, 2f], 0.01);
        Assert.Equal(KvQuantFitter.MinRange, r);
    }

    [Fact]
    public void FitGivesThresholdsAtTheOutlierRateAndCodebooksForEveryStream()
    {
        var shape = KvQuantTestData.Shape(2, 2, 16);
        var acts = KvQuantTestData.ActivationSet(shape, 4000, 3);
        var cals = KvQuantFitter.Fit(acts, new KvQuantFitOptions([0.01], Seed: 1, Threads: 2, Bins: 4096, Restarts: 1));
        Assert.Equal(new[] { 0.0, 0.01 }, cals.Select(c => c.OutlierFraction));
        foreach (var cal in cals)
        {
            for (int l = 0; l < 2; l++)
                foreach (var stream in KvQuantStreams.All)
                    foreach (int bits in KvQuantProfile.BitWidths)
                        Assert.NotNull(cal.Codebook(stream, l, bits));
            // Fraction of calibration keys outside the thresholds: none for min/max scaling, about f otherwise.
            long outside = 0, total = 0;
            for (int l = 0; l < 2; l++)
                for (int t = 0; t < acts.Tokens; t++)
                    for (int h = 0; h < 2; h++)
                    {
                        var z = cal.KeysPreRope.Zeros(l, h);
                        var r = cal.KeysPreRope.Ranges(l, h);
                        for (int c = 0; c < 16; c++)
                        {
                            float u = (acts.Keys[l][t * shape.KvDim + h * 16 + c] - z[c]) / r[c];
                            if (u > 1 || u < -1) outside++;
                            total++;
                        }
                    }
            double rate = (double)outside / total;
            if (cal.OutlierFraction == 0) Assert.Equal(0, outside);
            else Assert.InRange(rate, 0.008, 0.012);
        }
    }

    [Fact]
    public void PostRopeScalesDifferFromPreRope()
    {
        var shape = KvQuantTestData.Shape(1, 1, 16);
        var acts = KvQuantTestData.ActivationSet(shape, 2000, 4);
        var cal = KvQuantFitter.Fit(acts, new KvQuantFitOptions([0.01], Bins: 1024, Restarts: 0))[1];
        Assert.NotEqual(cal.KeysPreRope.Zero, cal.KeysPostRope.Zero);
        // Rotation mixes each pair: the post-RoPE zero points of a pair are pulled towards 0 across positions.
        double pre = cal.KeysPreRope.Zero.Sum(Math.Abs), post = cal.KeysPostRope.Zero.Sum(Math.Abs);
        Assert.True(post < pre, $"|zero| pre {pre}, post {post}");
    }

    [Fact]
    public void FitIsDeterministicAndWeightsChangeTheCodebooks()
    {
        var shape = KvQuantTestData.Shape(1, 2, 16);
        var opts = new KvQuantFitOptions([0.01], Seed: 3, Threads: 2, Bins: 2048, Restarts: 1);
        var plain = KvQuantTestData.ActivationSet(shape, 1500, 5);
        var weighted = KvQuantTestData.ActivationSet(shape, 1500, 5, weighted: true);
        var a = KvQuantFitter.Fit(plain, opts)[1];
        var b = KvQuantFitter.Fit(plain, opts)[1];
        var c = KvQuantFitter.Fit(weighted, opts)[1];
        Assert.Equal(a.Codebook(KvQuantStream.Value, 0, 3)!.Levels, b.Codebook(KvQuantStream.Value, 0, 3)!.Levels);
        Assert.NotEqual(a.Codebook(KvQuantStream.Value, 0, 3)!.Levels, c.Codebook(KvQuantStream.Value, 0, 3)!.Levels);
        Assert.Equal(a.KeysPreRope.Range, c.KeysPreRope.Range); // thresholds do not depend on the weights
    }

    [Fact]
    public void WindowsAreSeededDistinctAndStartWithBos()
    {
        var text = Enumerable.Range(10, 5000).ToArray();
        var a = CalibrationWindows.Choose(text, 8, 100, bos: 1, seed: 9);
        var b = CalibrationWindows.Choose(text, 8, 100, bos: 1, seed: 9);
        var c = CalibrationWindows.Choose(text, 8, 100, bos: 1, seed: 10);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.All(a, w => { Assert.Equal(100, w.Length); Assert.Equal(1, w[0]); Assert.Equal(0, (w[1] - 10) % 99); });
        Assert.Equal(8, a.Select(w => w[1]).Distinct().Count());
        Assert.Throws<ArgumentException>(() => CalibrationWindows.Choose(text, 60, 100, 1, 0));
    }
}
