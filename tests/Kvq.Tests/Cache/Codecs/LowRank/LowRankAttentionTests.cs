using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Tensors;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.LowRank;

/// <summary>
/// Low-rank keys through the paged cache: attention must equal f64 attention over the keys the codec reconstructs,
/// rotated by hand at their positions after reconstruction (Palu's order: project and store pre-RoPE, rotate the
/// reconstruction), with GQA, a sink, a whole-block latent codec (staging) and low-rank values.
/// </summary>
public class LowRankAttentionTests
{
    private static readonly Lazy<Kvq.Cache.Codecs.KvQuant.KvQuantProfile> Profile =
        new(() => LowRankTestData.Profile(KvQuantTestData.Shape(2, 2, 64, groupSize: 3), tokens: 1200, latentRanks: [16]));

    [Theory]
    [InlineData("lr32+f16/f16", 0)]
    [InlineData("lr16+f16/f16", 1)]
    [InlineData("lr10+int4/f16", 1)]
    [InlineData("lr16h+int4/f16", 0)]
    [InlineData("lr16+int4-ch/f16", 0)]
    [InlineData("lr12+int4-ch/int4", 1)]
    [InlineData("lr64+f32/lr5+f16", 0)]
    [InlineData("lr16+nuq4-1%/f16", 1)]
    [InlineData("lr16+nuq2/nuq3-1%", 0)]
    public void AttentionEqualsHandRotatedReconstructedKeys(string spec, int sink)
    {
        const int layers = 2, kvHeads = 2, headDim = 64, n = 75, layer = 1, bt = 32;
        var shape = KvQuantTestData.Shape(layers, kvHeads, headDim, groupSize: 3);
        var profile = Profile.Value;
        var cfg = KvCacheConfig.Parse(spec, bt) with { Profile = profile, SinkTokens = sink };
        var cache = new PagedKvCache(shape, cfg);
        using var seq = cache.CreateSequence();
        var k = LowRankTestData.ActivationSet(shape, n, 11).Keys;
        var v = LowRankTestData.ActivationSet(shape, n, 12).Values;
        var q = KvQuantTestData.Activations(n, shape.QDim, 13);
        seq.BeginChunk(new int[n]);
        for (int l = 0; l < layers; l++) seq.Append(l, k[l], v[l], n);
        var got = new float[n * shape.QDim];
        seq.Attend(layer, q, n, got, new Parallelism(2));
        seq.Commit(n);

        var kHat = Stored(cfg, KvSide.Key, shape, k[layer], n, sink);
        var vHat = Stored(cfg, KvSide.Value, shape, v[layer], n, sink);
        var cos = new float[headDim / 2];
        var sin = new float[headDim / 2];
        for (int t = 0; t < n; t++)
        {
            shape.Rope.Angles(t, cos, sin);
            for (int h = 0; h < kvHeads; h++) shape.Rope.Rotate(kHat.AsSpan(t * shape.KvDim + h * headDim, headDim), cos, sin);
        }
        var expected = ReferenceAttention.CausalGqa(shape, q, kHat, vHat, n);
        ReferenceAttention.AssertClose(got, expected);
    }

    /// <summary>What the cache holds for one side of a layer, decoded (pre-RoPE for keys): the sink as f16 copies,
    /// full blocks through the codec (whole-block codecs encode them from their f16 staging), and for whole-block
    /// codecs the unfinished last block as f16 staging.</summary>
    private static float[] Stored(KvCacheConfig cfg, KvSide side, KvShape shape, float[] x, int n, int sink)
    {
        int hd = shape.HeadDim, bt = cfg.BlockTokens;
        var y = new float[n * shape.KvDim];
        for (int h = 0; h < shape.KvHeads; h++)
        {
            var codec = cfg.CreateCodec(side, 1, h, hd);
            if (codec.HasBlockOutliers) codec = new BlockOutliersTestCodec(codec);   // rows of the block being built
            for (int b0 = 0; b0 < n; b0 += bt)
            {
                int cnt = Math.Min(bt, n - b0);
                var rows = new float[bt * hd];
                for (int t = 0; t < cnt; t++) x.AsSpan((b0 + t) * shape.KvDim + h * hd, hd).CopyTo(rows.AsSpan(t * hd));
                var block = new byte[codec.BlockBytes];
                (codec as BlockOutliersTestCodec)?.Rows.Clear();
                var dec = new float[bt * hd];
                if (codec.EncodesWholeBlocks && cnt < bt) dec = rows.Select(r => (float)(Half)r).ToArray();
                else
                {
                    if (codec.EncodesWholeBlocks) codec.EncodeBlock(rows.Select(r => (float)(Half)r).ToArray(), block); // sealed from f16 staging
                    else for (int t = 0; t < cnt; t++) codec.EncodeToken(rows.AsSpan(t * hd, hd), block, t);
                    codec.DecodeBlock(block, cnt, dec);
                }
                for (int t = 0; t < cnt; t++)
                {
                    var src = b0 + t < sink ? rows.AsSpan(t * hd, hd).ToArray().Select(r => (float)(Half)r).ToArray() : dec.AsSpan(t * hd, hd).ToArray();
                    src.CopyTo(y.AsSpan((b0 + t) * shape.KvDim + h * hd, hd));
                }
            }
        }
        return y;
    }
}
