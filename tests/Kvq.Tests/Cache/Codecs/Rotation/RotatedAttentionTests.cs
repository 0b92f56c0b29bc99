using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Tensors;
using Kvq.Tests.Cache.Codecs.KvQuant;

namespace Kvq.Tests.Cache.Codecs.Rotation;

/// <summary>
/// Rotated formats (<c>:rot</c>, TurboQuant's <c>tq*</c>) through the paged cache: attention, which folds the rotation
/// into the query and the output, must equal f64 attention over what the codecs decode, with keys rotated by RoPE
/// before encoding (these formats store post-RoPE keys, as the uniform formats and llama.cpp do), GQA, a sink, a
/// whole-block inner codec (staging) and the QJL residual.
/// </summary>
public class RotatedAttentionTests
{
    [Theory]
    [InlineData("q4_0:rot", 0)]
    [InlineData("q8_0:rot/int4:rot", 1)]
    [InlineData("int4-ch:rot/int2:rot", 0)]
    [InlineData("tq3", 0)]
    [InlineData("tq2.5/f16", 1)]
    [InlineData("tq3:qjl", 0)]
    [InlineData("f16/tq2.5:qjl", 0)]
    public void AttentionEqualsReferenceOverDecodedVectors(string spec, int sink)
    {
        const int layers = 2, kvHeads = 2, headDim = 64, n = 75, layer = 1, bt = 32;
        var shape = KvQuantTestData.Shape(layers, kvHeads, headDim, groupSize: 3);
        var cfg = KvCacheConfig.Parse(spec, bt) with { SinkTokens = sink };
        var cache = new PagedKvCache(shape, cfg);
        using var seq = cache.CreateSequence();
        var k = new float[layers][];
        var v = new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            k[l] = KvQuantTestData.Activations(n, shape.KvDim, 11 + l);
            v[l] = KvQuantTestData.Activations(n, shape.KvDim, 21 + l);
        }
        var q = KvQuantTestData.Activations(n, shape.QDim, 13);
        seq.BeginChunk(new int[n]);
        for (int l = 0; l < layers; l++) seq.Append(l, k[l], v[l], n);
        var got = new float[n * shape.QDim];
        seq.Attend(layer, q, n, got, new Parallelism(2));
        seq.Commit(n);

        // Post-RoPE storage: rotate the keys by hand at their positions, then through the codec.
        var kr = (float[])k[layer].Clone();
        var cos = new float[headDim / 2];
        var sin = new float[headDim / 2];
        for (int t = 0; t < n; t++)
        {
            shape.Rope.Angles(t, cos, sin);
            for (int h = 0; h < kvHeads; h++) shape.Rope.Rotate(kr.AsSpan(t * shape.KvDim + h * headDim, headDim), cos, sin);
        }
        var kHat = Stored(cfg, KvSide.Key, shape, kr, n, sink);
        var vHat = Stored(cfg, KvSide.Value, shape, v[layer], n, sink);
        var expected = ReferenceAttention.CausalGqa(shape, q, kHat, vHat, n);
        ReferenceAttention.AssertClose(got, expected);
    }

    /// <summary>What the cache holds for one side of layer 1, decoded: the sink as f16, full and partial blocks through the
    /// codec (whole-block codecs: full blocks from their f16 staging, the unfinished one as f16).</summary>
    private static float[] Stored(KvCacheConfig cfg, KvSide side, KvShape shape, float[] x, int n, int sink)
    {
        int hd = shape.HeadDim, bt = cfg.BlockTokens;
        var y = new float[n * shape.KvDim];
        for (int h = 0; h < shape.KvHeads; h++)
        {
            var codec = cfg.CreateCodec(side, 1, h, hd);
            Assert.False(codec.PreRope);
            for (int b0 = 0; b0 < n; b0 += bt)
            {
                int cnt = Math.Min(bt, n - b0);
                var rows = new float[bt * hd];
                for (int t = 0; t < cnt; t++) x.AsSpan((b0 + t) * shape.KvDim + h * hd, hd).CopyTo(rows.AsSpan(t * hd));
                var block = new byte[codec.BlockBytes];
                var dec = new float[bt * hd];
                if (codec.EncodesWholeBlocks && cnt < bt) dec = rows.Select(r => (float)(Half)r).ToArray();
                else
                {
                    if (codec.EncodesWholeBlocks) codec.EncodeBlock(rows.Select(r => (float)(Half)r).ToArray(), block);
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
