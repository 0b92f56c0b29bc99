using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Tensors;

namespace Kvq.Tests.Cache.Codecs.KvQuant;

/// <summary>
/// The pre-RoPE key path through the paged cache: attention with nuq keys must equal f64 attention over the keys the
/// codec decodes, rotated by hand at their positions (values through the value codec likewise), with GQA and a sink.
/// </summary>
public class KvQuantAttentionTests
{
    [Theory]
    [InlineData("nuq4-1%", 0)]
    [InlineData("nuq3-1%", 1)]
    [InlineData("nuq2", 0)]
    [InlineData("nuq3-1%:token", 1)]
    [InlineData("nuq3-1%:post", 1)]
    public void AttentionEqualsHandRotatedDecodedKeys(string spec, int sink)
    {
        const int layers = 2, kvHeads = 2, headDim = 64, n = 75, layer = 1;
        var shape = KvQuantTestData.Shape(layers, kvHeads, headDim, groupSize: 3);
        var profile = KvQuantTestData.Profile(shape, tokens: 1500);
        var cfg = KvCacheConfig.Parse(spec) with { Profile = profile, SinkTokens = sink };
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

        // Reference: encode/decode each token with this layer's codecs, rotate keys by hand unless the codec stores post-RoPE.
        var kHat = new float[n * shape.KvDim];
        var vHat = new float[n * shape.KvDim];
        var cos = new float[headDim / 2];
        var sin = new float[headDim / 2];
        for (int h = 0; h < kvHeads; h++)
        {
            var kc = cfg.CreateCodec(KvSide.Key, layer, h, headDim);
            var vc = cfg.CreateCodec(KvSide.Value, layer, h, headDim);
            if (kc.HasBlockOutliers) kc = new BlockOutliersTestCodec(kc);   // one token at a time: the rows of that block
            if (vc.HasBlockOutliers) vc = new BlockOutliersTestCodec(vc);
            var kb = new byte[kc.BlockBytes];
            var vb = new byte[vc.BlockBytes];
            var row = new float[headDim];
            for (int t = 0; t < n; t++)
            {
                shape.Rope.Angles(t, cos, sin);
                k.AsSpan(t * shape.KvDim + h * headDim, headDim).CopyTo(row);  // pre-RoPE, as the model hands it over
                if (!kc.PreRope) shape.Rope.Rotate(row, cos, sin);                // what a post-RoPE cache stores
                if (t < sink) RoundToHalf(row);                                   // sink: exact f16 copy
                else
                {
                    kc.EncodeToken(row, kb, 0);
                    kc.DecodeBlock(kb, 1, row);
                }
                if (kc.PreRope) shape.Rope.Rotate(row, cos, sin);                 // rotated after decoding
                row.CopyTo(kHat.AsSpan(t * shape.KvDim + h * headDim, headDim));
                v.AsSpan(t * shape.KvDim + h * headDim, headDim).CopyTo(row);
                if (t < sink) RoundToHalf(row);
                else
                {
                    vc.EncodeToken(row, vb, 0);
                    vc.DecodeBlock(vb, 1, row);
                }
                row.CopyTo(vHat.AsSpan(t * shape.KvDim + h * headDim, headDim));
            }
        }
        var expected = ReferenceAttention.CausalGqa(shape, q, kHat, vHat, n);
        ReferenceAttention.AssertClose(got, expected);
    }

    private static void RoundToHalf(Span<float> x)
    {
        for (int i = 0; i < x.Length; i++) x[i] = (float)(Half)x[i];
    }
}
