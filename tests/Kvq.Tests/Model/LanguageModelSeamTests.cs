using Kvq.Bench;
using Kvq.Cache;
using Kvq.Eval;
using Kvq.Generation;
using Kvq.Model;
using Kvq.Sampling;
using Kvq.Tensors;
using Kvq.Tests.Eval;

namespace Kvq.Tests.Model;

/// <summary>Generation, perplexity and the throughput benchmark through <see cref="ILanguageModel"/>: every sequence
/// comes from the model's CreateSequence (sized for the work, disposed after), and on the CPU the numbers are those of
/// the Transformer over one shared paged cache, as before the seam.</summary>
public sealed class LanguageModelSeamTests
{
    [Fact]
    public void PerplexityMakesOneSequencePerWindowAndMatchesASharedCache()
    {
        var transformer = EvalFixtures.StoriesTransformer();
        var tokens = EvalFixtures.StoriesTokens;
        var config = KvCacheConfig.Parse("kivi2"); // whole-block encoding with an f16 residual: the sequence holds staging too
        const int ctx = 64, windows = 3;
        int vocab = transformer.Config.VocabSize, bos = EvalFixtures.Stories.Tokenizer.BosId;

        var cache = new PagedKvCache(transformer.KvShape, config);
        var logits = new float[ctx * vocab];
        double nll = 0;
        KvMemory? memory = null;
        for (int w = 0; w < windows; w++)
        {
            var win = PerplexityWindows.Window(tokens, ctx, w, bos);
            using var seq = cache.CreateSequence();
            transformer.Forward(win, seq, default, logits);
            nll += PerplexityWindows.NegativeLogLikelihood(logits, win, vocab);
            memory = seq.Memory();
        }

        var model = new RecordingModel(transformer);
        var res = new PerplexityEvaluator(model, bos).Evaluate(tokens, ctx, windows, config);
        Assert.Equal(Math.Exp(nll / (windows * (ctx - 1))), res.Ppl);
        Assert.Equal(memory!.BitsPerElement, res.BitsPerElement);
        Assert.Equal(memory.BytesPerToken, res.KvBytesPerToken);
        Assert.Equal(Enumerable.Repeat(ctx, windows), model.Sizes);
        Assert.All(model.Made, s => Assert.True(s.Disposed));
    }

    [Fact]
    public void GeneratorGivesTheSameTextThroughTheSeam()
    {
        var transformer = EvalFixtures.StoriesTransformer();
        var tokenizer = EvalFixtures.Stories.Tokenizer;
        var options = new GenerationOptions { MaxTokens = 40, Sampler = SamplerOptions.Greedy };
        var config = KvCacheConfig.Parse("f16");
        var direct = new Generator(transformer, tokenizer).Generate("Once upon a time", options,
            new PagedKvCache(transformer.KvShape, config).CreateSequence());
        var model = new RecordingModel(transformer);
        var generator = new Generator(model, tokenizer);
        var prompt = generator.EncodePrompt("Once upon a time", options);
        var seq = model.CreateSequence(config, prompt.Length + options.MaxTokens);
        var viaSeam = generator.Generate(prompt, options, seq);
        Assert.Equal(direct.Text, viaSeam.Text);
        Assert.Equal(direct.GeneratedTokens, viaSeam.GeneratedTokens);
        Assert.Equal(prompt.Length + options.MaxTokens - 1, seq.Length); // the last sampled token is not run
    }

    [Fact]
    public void ThroughputBenchmarkSizesAndDisposesItsSequenceAndReportsTheDevice()
    {
        var model = new RecordingModel(EvalFixtures.StoriesTransformer());
        var res = ThroughputBenchmark.Run(model, "stories260K", 32, "f16", 4);
        Assert.Equal([36], model.Sizes);
        Assert.True(model.Made[0].Disposed);
        Assert.Equal(3, res.Threads);
        Assert.Equal("recording", res.Device);
        Assert.Equal(model.Made[0].LastMemory!.TotalBytes, res.KvBytes);
    }

    /// <summary>The Transformer behind a model that records the sequences it makes.</summary>
    private sealed class RecordingModel(Transformer inner) : ILanguageModel
    {
        public List<int> Sizes { get; } = [];
        public List<RecordedSequence> Made { get; } = [];
        public ModelConfig Config => inner.Config;
        public KvShape KvShape => inner.KvShape;
        public string Device => "recording";
        public int Threads => 3;

        public void Forward(ReadOnlySpan<int> tokens, IKvSequence kv, Span<float> lastLogits, Span<float> allLogits = default) =>
            inner.Forward(tokens, kv, lastLogits, allLogits);

        public IKvSequence CreateSequence(KvCacheConfig config, int maxTokens)
        {
            Sizes.Add(maxTokens);
            var s = new RecordedSequence(inner.CreateSequence(config, maxTokens));
            Made.Add(s);
            return s;
        }
    }

    private sealed class RecordedSequence(IKvSequence inner) : IKvSequence, IKvMemoryReport, IDisposable
    {
        public bool Disposed { get; private set; }
        public KvMemory? LastMemory { get; private set; }
        public int Length => inner.Length;
        public void BeginChunk(ReadOnlySpan<int> tokens) => inner.BeginChunk(tokens);
        public void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n) => inner.Append(layer, k, v, n);
        public void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par) => inner.Attend(layer, q, n, output, par);
        public void Commit(int n) => inner.Commit(n);
        public KvMemory Memory() => LastMemory = inner.ReportMemory();

        public void Dispose()
        {
            Disposed = true;
            (inner as IDisposable)?.Dispose();
        }
    }
}
