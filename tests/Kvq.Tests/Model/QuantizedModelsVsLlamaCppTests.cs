using Kvq.Cache;
using Kvq.LlamaCpp;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Model;

/// <summary>
/// books-19m quantized by llama.cpp's own quantizer (every weight type Kvq reads), run by both engines: Kvq uses the
/// quantized weights in place. llama.cpp also rounds activations to 8 bits for its quantized dot products while Kvq
/// keeps them in f32, so the bound is looser than for f16 weights.
/// </summary>
public class QuantizedModelsVsLlamaCppTests(ITestOutputHelper output)
{
    public static TheoryData<string> Variants => new(QuantizedFixtures.Names);

    [Theory]
    [MemberData(nameof(Variants))]
    public void LogitsMatchLlamaCpp(string variant)
    {
        var path = QuantizedFixtures.Get(variant);
        var tokens = SharedModels.MobyDickTokens.AsSpan(3000, 256).ToArray();
        tokens[0] = 1;
        using var peer = new LlamaCppModel(path);
        using var session = peer.CreateSession(256);
        var expected = session.Eval(tokens, allLogits: true);

        using var weights = GgufModelLoader.Load(path);
        var model = new Transformer(weights, new Parallelism(2));
        var actual = new float[expected.Length];
        model.Forward(tokens, new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16")).CreateSequence(), default, actual);
        var stats = LogitComparison.Compare(expected, actual, tokens.Length, weights.Config.VocabSize);
        output.WriteLine($"{variant}: {stats}");
        Assert.True(stats.Top1Agreement >= 0.97, stats.ToString());
        Assert.True(stats.MaxRelativeError < 0.05, stats.ToString());
    }
}
