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

        var (kHat, vHat) = HandDecoded(cfg, shape, k, v, n, sink, layer);
        var expected = ReferenceAttention.CausalGqa(shape, q, kHat, vHat, n);
        ReferenceAttention.AssertClose(got, expected);
    }

    /// <summary>A decode token (one query token, the register kernels: 3 query rows a KV head) over blocks whose first
    /// holds sink rows: block 0 goes through the fused kernels with the sink rows' scores and values put right after
    /// (<see cref="Kvq.Cache.Attention.KeyScores.Block"/>); the output must equal f64 attention over the
    /// hand-decoded keys and values. Sinks of 1..5 rows, a partial last block, pre- and post-RoPE keys, 1 and 2
    /// threads (split-K: block 0 in the first range only).</summary>
    [Theory]
    [InlineData("nuq4-1%", 1, 75, 1)]
    [InlineData("nuq3-1%", 4, 97, 2)]
    [InlineData("nuq4-1%:post", 1, 64, 1)]
    [InlineData("nuq3-1%:token", 2, 70, 1)]
    [InlineData("nuq2", 5, 33, 2)]
    public void DecodeOverASinkBlockEqualsHandRotatedDecodedKeys(string spec, int sink, int n, int threads)
    {
        const int layers = 2, kvHeads = 2, headDim = 64, layer = 1;
        var shape = KvQuantTestData.Shape(layers, kvHeads, headDim, groupSize: 3);
        var profile = KvQuantTestData.Profile(shape, tokens: 1500);
        var cfg = KvCacheConfig.Parse(spec) with { Profile = profile, SinkTokens = sink };
        var cache = new PagedKvCache(shape, cfg);
        using var seq = cache.CreateSequence();
        int seed = TestSeeds.Of(spec, n);
        var k = KvQuantTestData.Activations(n, shape.KvDim, seed + 1);
        var v = KvQuantTestData.Activations(n, shape.KvDim, seed + 2);
        var q = KvQuantTestData.Activations(n, shape.QDim, seed + 3);
        // The prompt (n - 1 tokens), then one decode token.
        seq.BeginChunk(new int[n - 1]);
        for (int l = 0; l < layers; l++) seq.Append(l, k.AsSpan(0, (n - 1) * shape.KvDim), v.AsSpan(0, (n - 1) * shape.KvDim), n - 1);
        seq.Commit(n - 1);
        seq.BeginChunk(new int[1]);
        for (int l = 0; l < layers; l++) seq.Append(l, k.AsSpan((n - 1) * shape.KvDim), v.AsSpan((n - 1) * shape.KvDim), 1);
        var got = new float[shape.QDim];
        seq.Attend(layer, q.AsSpan((n - 1) * shape.QDim), 1, got, new Parallelism(threads));
        seq.Commit(1);

        var (kHat, vHat) = HandDecoded(cfg, shape, k, v, n, sink, layer);
        var all = ReferenceAttention.CausalGqa(shape, q, kHat, vHat, n);
        ReferenceAttention.AssertClose(got, all.AsSpan((n - 1) * shape.QDim).ToArray());
    }

    /// <summary>Encodes and decodes each token with this layer's codecs (the first <paramref name="sink"/> as exact f16
    /// copies), rotating keys by hand unless the codec stores post-RoPE: the keys and values attention should see.</summary>
    private static (float[] K, float[] V) HandDecoded(KvCacheConfig cfg, KvShape shape, float[] k, float[] v, int n, int sink, int layer)
    {
        int kvHeads = shape.KvHeads, headDim = shape.HeadDim;
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
        return (kHat, vHat);
    }

    private static void RoundToHalf(Span<float> x)
    {
        for (int i = 0; i < x.Length; i++) x[i] = (float)(Half)x[i];
    }
}
