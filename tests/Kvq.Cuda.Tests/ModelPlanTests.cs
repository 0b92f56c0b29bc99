using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cuda.Attention;
using Kvq.Cuda.Model;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Cuda.Tests;

/// <summary>The CUDA model's host-side decisions, checked without a GPU: how attention is split, which caches the
/// device takes, which take the contiguous decode layout, and the RoPE parameters handed to the kernels.</summary>
public class ModelPlanTests
{
    [Theory]
    [InlineData(1, 1, 2, 132, 1024)]
    [InlineData(300, 64, 2, 132, 1024)]
    [InlineData(4001, 1, 2, 132, 1024)]
    [InlineData(131072, 1, 32, 132, 1024)]
    [InlineData(1000000, 1, 8, 114, 1024)]
    [InlineData(32768, 512, 32, 132, 1024)]
    public void SplitsCoverTheTokensInWholeTilesWithinThePartialsRoom(long tokens, int n, int kvHeads, int sms, int maxStates)
    {
        var s = AttentionSplit.For(tokens, n, kvHeads, sms, maxStates);
        Assert.True(s.PerSplit % 128 == 0 && s.PerSplit > 0);
        Assert.True((long)s.Splits * s.PerSplit >= tokens);
        Assert.True((long)(s.Splits - 1) * s.PerSplit < Math.Max(tokens, 1));
        Assert.True((long)s.Splits * n <= Math.Max(maxStates, n), $"{s.Splits} splits x {n} rows exceed {maxStates} partial states");
    }

    private static KvShape Shape(int headDim, int kvHeads, int heads, RopeStyle style = RopeStyle.Normal, int layers = 2) =>
        (new ModelConfig
        {
            Architecture = "llama", Dim = heads * headDim, Layers = layers, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, FfnDim = 64,
            VocabSize = 32, NormEps = 1e-5f, RopeBase = 10000f, RopeDims = headDim, RopeStyle = style, ContextLength = 4096,
        }).CreateKvShape();

    private static (NuqChannelCodec[] Keys, NuqTokenCodec[] Values) Codecs(string spec, int kvHeads, int headDim, bool sameBooks = true)
    {
        var s = KvQuantSpec.TryParse(spec)!;
        var rng = new Random(3);
        var keys = new NuqChannelCodec[kvHeads];
        var values = new NuqTokenCodec[kvHeads];
        for (int h = 0; h < kvHeads; h++)
        {
            var zero = Enumerable.Range(0, headDim).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
            var range = Enumerable.Range(0, headDim).Select(_ => 0.5f + (float)rng.NextDouble()).ToArray();
            var book = sameBooks || h == 0 ? NuqCodebook.Uniform(s.Bits)
                : new NuqCodebook(NuqCodebook.Uniform(s.Bits).Levels.Select((x, i) => x * (0.9f + 0.01f * i)).ToArray());
            keys[h] = new NuqChannelCodec(s, KvSide.Key, 32, headDim, zero, range, book);
            values[h] = new NuqTokenCodec(s, KvSide.Value, 32, headDim, NuqCodebook.Uniform(s.Bits));
        }
        return (keys, values);
    }

    [Fact]
    public void TheContiguousLayoutTakesHeadDim128WithOneOrFourQueryHeadsAndItsSlotCounts()
    {
        var mha = Shape(128, 4, 4);
        var gqa4 = Shape(128, 2, 8);
        Assert.Equal(NuqLayout.Slots, CudaKvSequence.ContiguousLayout([Codecs("nuq4-1%", 4, 128), Codecs("nuq4-1%", 4, 128)], mha, 1));
        Assert.Equal(NuqLayout.Dense, CudaKvSequence.ContiguousLayout([Codecs("nuq2", 2, 128), Codecs("nuq2", 2, 128)], gqa4, 0));
        // Head dim 64 (books-19m), 3 query heads per KV head, 2 sink tokens, NeoX RoPE, 0.5% outliers, per-head
        // codebooks, mixed layouts across layers: the model's own layout.
        Assert.Null(CudaKvSequence.ContiguousLayout([Codecs("nuq4-1%", 2, 64), Codecs("nuq4-1%", 2, 64)], Shape(64, 2, 6), 1));
        Assert.Null(CudaKvSequence.ContiguousLayout([Codecs("nuq4-1%", 2, 128), Codecs("nuq4-1%", 2, 128)], Shape(128, 2, 6), 1));
        Assert.Null(CudaKvSequence.ContiguousLayout([Codecs("nuq4-1%", 4, 128), Codecs("nuq4-1%", 4, 128)], mha, 2));
        Assert.Null(CudaKvSequence.ContiguousLayout([Codecs("nuq4-1%", 4, 128), Codecs("nuq4-1%", 4, 128)], Shape(128, 4, 4, RopeStyle.Neox), 1));
        Assert.Null(CudaKvSequence.ContiguousLayout([Codecs("nuq4-0.5%", 4, 128), Codecs("nuq4-0.5%", 4, 128)], mha, 1));
        Assert.Null(CudaKvSequence.ContiguousLayout([Codecs("nuq4-1%", 4, 128, sameBooks: false), Codecs("nuq4-1%", 4, 128)], mha, 1));
        Assert.Null(CudaKvSequence.ContiguousLayout([Codecs("nuq4-1%", 4, 128), Codecs("nuq4", 4, 128)], mha, 1));
    }

    [Fact]
    public void TheDeviceCacheRefusesWhatItCannotHoldByName()
    {
        var shape = Shape(64, 2, 6);
        Assert.Null(CudaKvSequence.Check(new KvCacheConfig("f16", "f16"), shape));
        var e = Assert.Throws<KvSpecException>(() => CudaKvSequence.Check(new KvCacheConfig("q4_0", "q4_0"), shape));
        Assert.Contains("q4_0", e.Message);
        Assert.Contains("CUDA", e.Message);
        Assert.Throws<NotSupportedException>(() => CudaKvSequence.CheckShape(Shape(96, 2, 6)));
        Assert.Throws<NotSupportedException>(() => CudaKvSequence.CheckShape(Shape(64, 1, 16)));
    }

    [Fact]
    public void RopeParametersAreTheCpuRecurrence()
    {
        var c = new ModelConfig
        {
            Architecture = "qwen2", Dim = 256, Layers = 1, Heads = 4, KvHeads = 2, HeadDim = 64, FfnDim = 64, VocabSize = 32,
            NormEps = 1e-6f, RopeBase = 1000000f, RopeScale = 4f, RopeDims = 32, RopeStyle = RopeStyle.Neox, ContextLength = 4096,
        };
        var r = RopeParams.For(c);
        Assert.True(r.Neox);
        Assert.Equal(32, r.RopeDims);
        Assert.Equal(4f, r.Scale);
        Assert.Equal(MathF.Pow(1000000f, -2f / 32), r.ThetaScale);
        Assert.Equal(CudaWeightType.F32, CudaModelOptions.ParseWeights(" F32 "));
        Assert.Throws<ArgumentException>(() => CudaModelOptions.ParseWeights("bf16"));
    }
}
