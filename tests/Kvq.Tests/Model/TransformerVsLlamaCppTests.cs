using Kvq.Cache;
using Kvq.Formats.Gguf;
using Kvq.LlamaCpp;
using Kvq.Model;
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
        var tokens = peer.Tokenize(text[..20000], addBos: true)[..512];
        using var session = peer.CreateSession(512);
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
        Assert.True(stats.MaxRelativeError < 0.01, stats.ToString());
    }
}
