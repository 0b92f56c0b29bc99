using Kvq.Cache;
using Kvq.LlamaCpp;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Model;

/// <summary>The forward pass against llama.cpp's logits on the same token ids (ids from llama.cpp's tokenizer).</summary>
public class TransformerVsLlamaCppTests(ITestOutputHelper output)
{
    [Fact]
    public void BooksLogitsMatchLlamaCpp()
    {
        using var peer = new LlamaCppModel(Fixtures.BooksGguf);
        var text = TextFixtures.Read(Fixtures.MobyDick);
        // 2,048 positions of one context: far-back keys are exercised too.
        var tokens = peer.Tokenize(text[..40000], addBos: true)[..2048];
        using var session = peer.CreateSession(2048);
        var expected = session.Eval(tokens, allLogits: true);

        using var weights = GgufModelLoader.Load(Fixtures.BooksGguf);
        var model = new Transformer(weights, new Parallelism(2));
        var kv = new DenseF32Sequence(model.KvShape);
        int vocab = weights.Config.VocabSize;
        var actual = new float[tokens.Length * vocab];
        model.Forward(tokens, kv, default, actual);

        var stats = LogitComparison.Compare(expected, actual, tokens.Length, vocab);
        output.WriteLine(stats.ToString());
        Assert.True(stats.Top1Agreement >= 0.995, stats.ToString());
        // llama.cpp rounds activations to f16 before its f16 matmuls; we stay in f32: ~1e-3 relative.
        Assert.True(stats.MaxRelativeError < 5e-3, stats.ToString());
    }
}
