using Kvq.Cache;
using Kvq.Formats.Gguf.Synthetic;
using Kvq.LlamaCpp;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Tests.Model;

/// <summary>
/// Every synthetic model family (<see cref="SyntheticModels"/>: Llama 3 RoPE factors, YaRN, partial rotary, QK-norm, ...)
/// against llama.cpp on real text: logits of 128 positions (Moby Dick, tokenized by llama.cpp with the model's own
/// vocabulary) in f32 and Q8_0 weights, and 32 greedy tokens. KVQ_FAMILY_POSITIONS=512 KVQ_FAMILY_GREEDY=64 give the
/// report's numbers (docs/models.md).
/// </summary>
public class FamiliesVsLlamaCppTests(ITestOutputHelper output)
{
    public static int Positions => EnvInt("KVQ_FAMILY_POSITIONS", 128);
    public static int GreedySteps => EnvInt("KVQ_FAMILY_GREEDY", 32);
    /// <summary>Kvq's KV format in the logit comparison (KVQ_FAMILY_KV; f32 by default, llama.cpp's cache is f16).</summary>
    public static string KvFormat => Environment.GetEnvironmentVariable("KVQ_FAMILY_KV") is { Length: > 0 } kv ? kv : "f32";

    /// <summary>llama.cpp's cache in the logit comparison: Kvq's format where llama.cpp has it (f32, f16), with flash
    /// attention off. llama.cpp's default (flash attention on CPU) rounds the queries to f16 and sums softmax . V in f16
    /// whatever the cache type (its logits are bitwise the same with an f16 or f32 cache then), and the 8-bit activations
    /// of Q8_0 products amplify that rounding into flipped top-1s on Gemma's near-tied logits (docs/models.md).</summary>
    public static string PeerCache => KvFormat is "f32" or "f16" ? KvFormat : "f16";

    private static int EnvInt(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out int v) && v > 0 ? v : fallback;

    /// <summary>The dense families. Mixtures of experts have their own bounds (a routing flip under llama.cpp's activation
    /// rounding moves a position by O(1)): FamilyModelsVsLlamaCppTests.</summary>
    private static IEnumerable<string> Dense => SyntheticModels.LlamaCppNames.Where(n => SyntheticFixtures.Spec(n).Experts == 0);

    public static TheoryData<string, GgmlType> Cases()
    {
        var d = new TheoryData<string, GgmlType>();
        foreach (var n in Dense)
        {
            d.Add(n, GgmlType.F32);
            if (IsGemma(n)) d.Add(n, GgmlType.F16);
            d.Add(n, GgmlType.Q8_0);
        }
        return d;
    }

    public static TheoryData<string> Names() => new(Dense);

    /// <summary>Max relative logit error allowed: llama.cpp rounds activations to f16 (f32 weights), where Kvq stays in
    /// f32; with Q8_0 weights both round them to 8 bits, but the engines still differ more (docs/models.md).</summary>
    public static double Bound(GgmlType type) => type == GgmlType.Q8_0 ? 0.04 : 0.01;

    private static bool IsGemma(string name) => name.StartsWith("gemma", StringComparison.Ordinal);

    /// <summary>(top-1, max relative error) required. Gemma's output is tied to its embeddings, so its synthetic logits are
    /// a random projection of the last hidden state (no output matrix to echo the embeddings into a peaked bigram) and
    /// near-ties are common. With llama.cpp's f16 flash attention off (<see cref="PeerCache"/>) and Kvq's GELU through
    /// ggml's f16 table, gemma2 Q8_0 agrees to 3.4e-7 (every op rounds alike); gemma3 Q8_0 (6 layers) still flips a
    /// few: last-bit differences of the two engines' f32 attention sums (Kvq's online softmax over blocks against
    /// llama.cpp's whole-row softmax) move an 8-bit activation code or an f16 GELU input now and then, and 6 layers
    /// compound it (512 positions: 98.8%, 3.3e-2; docs/models.md). Everything else meets the common bounds.</summary>
    public static (double Top1, double Rel) Bounds(string name, GgmlType type) => (name, type) switch
    {
        ("gemma3", GgmlType.Q8_0) => (0.97, 0.05),
        // Measured 2.9e-7 (128 positions) and 3.4e-7 (512) on an AVX-512 machine; 1e-3 leaves room for another
        // libggml-cpu variant's sum order and still fails by 30x if the GELU or the attention rounds unlike ggml's.
        ("gemma2", GgmlType.Q8_0) => (0.99, 1e-3),
        _ => (0.99, Bound(type)),
    };

    /// <summary>The first <paramref name="count"/> tokens of Moby Dick from a chapter start, BOS first.</summary>
    public static int[] RealText(LlamaCppModel peer, int count, int offset = 20000)
    {
        var text = TextFixtures.Read(Fixtures.MobyDick);
        var tokens = peer.Tokenize(text.Substring(offset, count * 8), addBos: true);
        Assert.True(tokens.Length >= count, $"{tokens.Length} tokens from {count * 8} characters");
        return tokens[..count];
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void LogitsMatchLlamaCpp(string name, GgmlType type)
    {
        var path = SyntheticFixtures.Get(name, type);
        using var peer = new LlamaCppModel(path);
        var tokens = RealText(peer, Positions);
        using var session = peer.CreateSession(Positions, cacheType: PeerCache, flashAttention: false);
        var expected = session.Eval(tokens, allLogits: true);

        using var weights = GgufModelLoader.Load(path);
        var model = new Transformer(weights, new Parallelism(2), maxBatch: 32);
        var actual = new float[expected.Length];
        model.Forward(tokens, new PagedKvCache(model.KvShape, KvCacheConfig.Parse(KvFormat)).CreateSequence(), default, actual);
        var stats = LogitComparison.Compare(expected, actual, tokens.Length, weights.Config.VocabSize);
        output.WriteLine($"{name} {type} (kv {KvFormat}): {stats}");
        var (top1, rel) = Bounds(name, type);
        Assert.True(stats.Top1Agreement >= top1, stats.ToString());
        Assert.True(stats.MaxRelativeError < rel, stats.ToString());
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void GreedyTokensMatchLlamaCpp(string name)
    {
        int steps = GreedySteps;
        var path = SyntheticFixtures.Get(name);
        using var peer = new LlamaCppModel(path);
        var prompt = RealText(peer, 16, offset: 50000);
        using var session = peer.CreateSession(16 + steps);
        var theirs = new List<int>();
        var logits = session.Eval(prompt, allLogits: false);
        for (int i = 0; i < steps; i++)
        {
            int next = ArgMax(logits);
            theirs.Add(next);
            logits = session.Eval([next], allLogits: false);
        }

        using var weights = GgufModelLoader.Load(path);
        var model = new Transformer(weights, new Parallelism(2), maxBatch: 16);
        var kv = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f32")).CreateSequence();
        var last = new float[weights.Config.VocabSize];
        model.Forward(prompt, kv, last);
        var ours = new List<int>();
        for (int i = 0; i < steps; i++)
        {
            int next = ArgMax(last);
            ours.Add(next);
            model.Forward([next], kv, last);
        }
        output.WriteLine($"{name}: {string.Join(' ', ours)}");
        Assert.Equal(theirs, ours);
        Assert.True(ours.Distinct().Count() > 1, "a greedy run of one repeated token tests little");
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
