using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Codecs.Rotation;
using Kvq.Calibration;
using Kvq.Calibration.KvQuant;
using Kvq.Tensors;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.Rotation;

/// <summary>
/// <c>nuqB:rot</c>: KVQuant behind the Hadamard rotation, keys still pre-RoPE. The calibration must see the rotated
/// channels (<see cref="RotatedActivations"/>); attention un-rotates each decoded key before RoPE.
/// </summary>
public class RotatedKvQuantTests
{
    private static KvQuantProfile RotatedProfile(KvShape shape, int tokens = 1500)
    {
        var acts = RotatedActivations.Rotate(KvQuantTestData.ActivationSet(shape, tokens, 1, weighted: true));
        var cals = KvQuantFitter.Fit(acts, new KvQuantFitOptions([0.01], Seed: 7, Threads: 1, Bins: 4096, Restarts: 1));
        var settings = new KvQuantCalibrationSettings("synthetic" + RotatedSpec.ProfileTextMarker, new string('0', 64), 1, tokens, 1, 7, true);
        return new KvQuantProfile("test-model", settings, shape.Layers, shape.KvHeads, shape.HeadDim, cals);
    }

    [Fact]
    public void RotatedActivationsRotateEachHeadAndSpreadFisherWeightsOverTheRun()
    {
        var shape = KvQuantTestData.Shape(2, 2, 64);
        var acts = KvQuantTestData.ActivationSet(shape, 40, 3, weighted: true);
        var rot = RotatedActivations.Rotate(acts);
        for (int l = 0; l < 2; l++)
            for (int t = 0; t < 40; t += 13)
                for (int h = 0; h < 2; h++)
                {
                    int o = t * shape.KvDim + h * 64;
                    for (int i = 0; i < 64; i++)
                    {
                        double k = 0, v = 0, wsum = 0;
                        for (int j = 0; j < 64; j++)
                        {
                            k += Hadamard.Entry(i, j) * (double)acts.Keys[l][o + j];
                            v += Hadamard.Entry(i, j) * (double)acts.Values[l][o + j];
                            wsum += acts.KeyWeights![l][o + j];
                        }
                        Assert.Equal(k / 8, rot.Keys[l][o + i], 1e-3);
                        Assert.Equal(v / 8, rot.Values[l][o + i], 1e-3);
                        Assert.Equal(wsum / 64, rot.KeyWeights![l][o + i], 1e-4 * wsum);
                    }
                }
    }

    [Fact]
    public void RefusesAProfileCalibratedOnUnrotatedChannels()
    {
        var shape = KvQuantTestData.Shape(2, 2, 64);
        var plain = KvQuantTestData.Profile(shape, tokens: 600);
        var cfg = KvCacheConfig.Parse("nuq3-1%:rot") with { Profile = plain };
        var e = Assert.Throws<KvSpecException>(() => cfg.CreateCodec(KvSide.Key, 0, 0, 64));
        Assert.Contains("kvq calibrate --rotate", e.Message);
        Assert.Contains("nuq3-1%:rot", e.Message);
    }

    /// <summary>KVQuant values (and post-RoPE keys) behind the rotation are read through the inner codec's fused kernels
    /// in the rotated basis, the rotation applied once to the query / undone once on the output; this must equal the
    /// plain tile path (decode, un-rotate each token, then dot or accumulate), outliers included.</summary>
    [Theory]
    [InlineData("nuq3-1%:rot", 32, 2)]
    [InlineData("nuq2-1%:rot", 19, 3)]
    [InlineData("nuq4-1%:rot", 7, 1)]
    [InlineData("nuq3-1%:post:rot", 27, 3)]
    public void FusedReadsEqualTheTilePathWithOutliers(string spec, int count, int nq)
    {
        const int headDim = 64;
        var shape = KvQuantTestData.Shape(2, 2, headDim);
        var cfg = KvCacheConfig.Parse(spec) with { Profile = RotatedProfile(shape) };
        foreach (var side in new[] { KvSide.Key, KvSide.Value })
        {
            var codec = cfg.CreateCodec(side, 1, 1, headDim);
            if (side == KvSide.Key && codec.PreRope) continue; // pre-RoPE keys take the tile path by design
            Assert.True(codec.HasBlockOutliers);
            int seed = TestSeeds.Of(spec, side, count, nq);
            var x = KvQuantTestData.Activations(32, headDim, seed);
            var rng = new Random(seed);
            for (int i = 0; i < 40; i++) x[rng.Next(x.Length)] *= 25f; // outliers that the sparse rows must carry
            var block = new byte[codec.BlockBytes];
            var rows = new BlockOutliers();
            for (int t = 0; t < count; t++) codec.EncodeToken(x.AsSpan(t * headDim, headDim), block, rows, t);
            Assert.True(rows.Count > 0, "the test data must produce exact outliers");
            var tile = new float[32 * headDim];
            codec.DecodeBlock(block, rows, count, tile);
            var q = KvQuantTestData.Activations(nq, headDim, seed + 1);
            var w = new float[nq * count];
            for (int i = 0; i < w.Length; i++) w[i] = (float)rng.NextDouble();
            var scratch = new float[32 * headDim];
            if (side == KvSide.Key)
            {
                var want = new float[nq * count];
                Kvq.Cache.Attention.TileMath.Scores(tile.AsSpan(0, count * headDim), count, headDim, q, nq, want);
                var got = new float[nq * count];
                codec.Scores(block, rows, count, q, nq, got, scratch);
                for (int i = 0; i < got.Length; i++) Assert.Equal(want[i], got[i], 1e-3 * (1 + Math.Abs(want[i])));
            }
            else
            {
                var want = new float[nq * headDim];
                var got = new float[nq * headDim];
                for (int i = 0; i < want.Length; i++) want[i] = got[i] = 0.25f * i; // accumulates onto what is there
                Kvq.Cache.Attention.TileMath.Accumulate(tile.AsSpan(0, count * headDim), count, headDim, w, nq, want);
                codec.Accumulate(block, rows, count, w, nq, got, scratch);
                for (int i = 0; i < got.Length; i++) Assert.Equal(want[i], got[i], 1e-3 * (1 + Math.Abs(want[i])));
            }
        }
    }

    [Theory]
    [InlineData("nuq3-1%:rot", 0)]
    [InlineData("nuq4-1%:rot", 1)]
    [InlineData("nuq2:rot/nuq3-1%:rot", 0)]
    public void AttentionEqualsHandRotatedDecodedKeys(string spec, int sink)
    {
        const int layers = 2, kvHeads = 2, headDim = 64, n = 75, layer = 1;
        var shape = KvQuantTestData.Shape(layers, kvHeads, headDim, groupSize: 3);
        var cfg = KvCacheConfig.Parse(spec) with { Profile = RotatedProfile(shape), SinkTokens = sink };
        var cache = new PagedKvCache(shape, cfg);
        using var seq = cache.CreateSequence();
        var k = KvQuantTestData.Activations(n, shape.KvDim, 11);
        var v = KvQuantTestData.Activations(n, shape.KvDim, 12);
        var q = KvQuantTestData.Activations(n, shape.QDim, 13);
        seq.BeginChunk(new int[n]);
        for (int l = 0; l < layers; l++) seq.Append(l, k, v, n);
        var got = new float[n * shape.QDim];
        seq.Attend(layer, q, n, got, new Parallelism(2));
        seq.Commit(n);

        var kHat = new float[n * shape.KvDim];
        var vHat = new float[n * shape.KvDim];
        var cos = new float[headDim / 2];
        var sin = new float[headDim / 2];
        for (int h = 0; h < kvHeads; h++)
        {
            var kc = cfg.CreateCodec(KvSide.Key, layer, h, headDim);
            var vc = cfg.CreateCodec(KvSide.Value, layer, h, headDim);
            Assert.True(kc.PreRope, "KVQuant keys stay pre-RoPE behind the rotation");
            var kb = new byte[kc.BlockBytes];
            var vb = new byte[vc.BlockBytes];
            var row = new float[headDim];
            for (int t = 0; t < n; t++)
            {
                shape.Rope.Angles(t, cos, sin);
                k.AsSpan(t * shape.KvDim + h * headDim, headDim).CopyTo(row);
                if (t < sink) for (int i = 0; i < headDim; i++) row[i] = (float)(Half)row[i];
                else
                {
                    var rows = kc.HasBlockOutliers ? new BlockOutliers() : null;
                    kc.EncodeToken(row, kb, rows, 0);
                    kc.DecodeBlock(kb, rows, 1, row);
                }
                shape.Rope.Rotate(row, cos, sin); // RoPE after un-rotating the decoded key
                row.CopyTo(kHat.AsSpan(t * shape.KvDim + h * headDim));
                v.AsSpan(t * shape.KvDim + h * headDim, headDim).CopyTo(row);
                if (t < sink) for (int i = 0; i < headDim; i++) row[i] = (float)(Half)row[i];
                else
                {
                    var rows = vc.HasBlockOutliers ? new BlockOutliers() : null;
                    vc.EncodeToken(row, vb, rows, 0);
                    vc.DecodeBlock(vb, rows, 1, row);
                }
                row.CopyTo(vHat.AsSpan(t * shape.KvDim + h * headDim));
            }
        }
        ReferenceAttention.AssertClose(got, ReferenceAttention.CausalGqa(shape, q, kHat, vHat, n));
    }
}
