using Kvq.Cache;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;

namespace Kvq.Tests.Formats.Llama2c;

/// <summary>The .bin through the forward pass gives the logits of its GGUF conversion (same weights, same RoPE style).</summary>
public sealed class Llama2cForwardTests
{
    internal static float[] Logits(ModelWeights w, int[] tokens)
    {
        var model = new Transformer(w, new Parallelism(2));
        var logits = new float[tokens.Length * w.Config.VocabSize];
        model.Forward(tokens, new DenseF32Sequence(model.KvShape), default, logits);
        return logits;
    }

    internal static int[] Tokens(int seed, int n, int vocab)
    {
        var rng = new Random(seed);
        var t = new int[n];
        t[0] = 1;   // BOS
        for (int i = 1; i < n; i++) t[i] = rng.Next(3, vocab);
        return t;
    }

    [Fact]
    public void Logits_equal_the_gguf_conversion()
    {
        using var bin = Llama2cLoader.Load(Fixtures.StoriesBin);
        using var gguf = GgufModelLoader.Load(Fixtures.StoriesGguf);
        Assert.Equal(gguf.Config.RopeStyle, bin.Config.RopeStyle);
        var tokens = Tokens(seed: 5, n: 200, bin.Config.VocabSize);
        Assert.Equal(Logits(gguf, tokens), Logits(bin, tokens));
    }
}
