using Kvq.Cache;
using Kvq.LlamaCpp;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Model;

/// <summary>Random-weight models of shapes the fixtures lack, each checked against llama.cpp's logits.</summary>
public class TinyModelsVsLlamaCppTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-tests-" + Guid.NewGuid().ToString("N"));

    public static TheoryData<string, int, bool, bool> Shapes => new()
    {
        { "llama", 1, false, false },   // MQA: one KV head
        { "llama", 4, true, false },    // MHA, tied output
        { "llama", 2, false, false },   // GQA 2:1
        { "qwen2", 2, false, true },    // neox RoPE + q/k/v biases
        { "qwen2", 1, true, true },     // neox + biases + MQA + tied
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void LogitsMatchLlamaCpp(string arch, int kvHeads, bool tied, bool biases)
    {
        // Mistral GGUFs use the llama architecture name, so the llama rows cover them; vary the RoPE base as Llama 3 does.
        var spec = new TinyModelSpec(arch, KvHeads: kvHeads, Tied: tied, Biases: biases, Seed: kvHeads * 10 + (tied ? 1 : 0),
            RopeBase: kvHeads == 2 && arch == "llama" ? 500000f : 10000f);
        var path = TinyModelWriter.Write(spec, _dir);
        using var peer = new LlamaCppModel(path);
        var rng = new Random(3);
        var tokens = new int[100];
        tokens[0] = 1;
        for (int i = 1; i < tokens.Length; i++) tokens[i] = rng.Next(3, peer.VocabSize);
        using var session = peer.CreateSession(128);
        var expected = session.Eval(tokens, allLogits: true);

        using var weights = GgufModelLoader.Load(path);
        Assert.Equal(tied, weights.TiedOutput);
        var model = new Transformer(weights, new Parallelism(2), maxBatch: 16);
        var actual = new float[expected.Length];
        model.Forward(tokens, new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f32")).CreateSequence(), default, actual);
        var stats = LogitComparison.Compare(expected, actual, tokens.Length, weights.Config.VocabSize);
        output.WriteLine($"{spec.Describe}: {stats}");
        Assert.True(stats.Top1Agreement >= 0.99, stats.ToString());
        Assert.True(stats.MaxRelativeError < 0.01, stats.ToString());
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }
}
