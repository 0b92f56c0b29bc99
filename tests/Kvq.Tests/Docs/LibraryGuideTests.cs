using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Layout;
using Kvq.Cache.Offload;
using Kvq.Cache.Policies;
using Kvq.Cache.Sessions;
using Kvq.Eval;
using Kvq.Generation;
using Kvq.Model;
using Kvq.Sampling;
using Kvq.Serving;
using Kvq.Tensors;
using Kvq.Text;

namespace Kvq.Tests.Docs;

/// <summary>The code of docs/library.md, run as written (small sizes): if the guide's API drifts, this breaks.</summary>
public class LibraryGuideTests
{
    [Fact]
    public async Task TheGuideRunsAsWritten()
    {
        string modelPath = Fixtures.BooksGguf;
        // -- 1. Load a model and generate with a cache format --
        using var loaded = ModelLoader.Load(modelPath);              // GGUF, llama2.c .bin, or a Hugging Face folder
        var model = new Transformer(loaded.Weights, new Parallelism(Environment.ProcessorCount));
        var generator = new Generator(model, loaded.Tokenizer);
        using (var kv = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("q8_0")).CreateSequence())
        {
            var result = generator.Generate("Call me Ishmael.", new GenerationOptions { MaxTokens = 16, Sampler = SamplerOptions.Greedy }, kv,
                onText: Console.Write);
            Assert.Equal(16, result.GeneratedTokens);
        }

        // -- 2. A token policy on top of the format: keep a quarter of the tokens (H2O) --
        var policy = new KvPolicyConfig(KvPolicyRegistry.Parse("h2o"), KvBudget.Parse("0.25"));
        using (var kv = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16") with { Policy = policy }).CreateSequence())
            generator.Generate("Call me Ishmael.", new GenerationOptions { MaxTokens = 8 }, kv);

        // -- 3. Many requests at once: the serving engine, async streaming --
        using var engine = new InferenceEngine(new Transformer(loaded.Weights, new Parallelism(2), maxBatch: 256), loaded.Tokenizer,
            new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = Bytes.Parse("64MiB") });
        var prompt = loaded.Tokenizer.Encode("It was a dark and stormy night", addBos: true);
        var stream = engine.Submit(new CompletionRequest { PromptTokens = prompt, MaxTokens = 12, Sampler = SamplerOptions.Greedy },
            CancellationToken.None);
        await foreach (var token in stream) Console.Write(token.Text);
        var done = await stream.Completion;                            // finish reason, usage, time to first token
        Assert.Equal(FinishReason.Length, done.FinishReason);

        // -- 4. Evaluate: perplexity of a format on real text --
        var tokens = loaded.Tokenizer.Encode(TextNormalizer.ReadNormalized(Fixtures.MobyDick), addBos: false);
        var ppl = new PerplexityEvaluator(model, loaded.Tokenizer.BosId).Evaluate(tokens, ctx: 128, windows: 2, "q4_0");
        Assert.InRange(ppl.Ppl, 5, 500);                               // ppl.PplError: its standard error
        _ = typeof(KvQuantProfile); // KVQuant formats: KvCacheConfig.Parse("nuq3-1%") with { Profile = KvQuantProfile.Load(path, weights.Fingerprint) }

        var dir = Directory.CreateTempSubdirectory("kvq-guide-");
        string sessionPath = Path.Combine(dir.FullName, "ishmael.kvqs");
        // -- 5. Save a prompt's compressed cache and restore it: session files --
        var config = KvCacheConfig.Parse("q8_0");
        var identity = ModelIdentity.Of(loaded).Session(KvLayoutPlan.Build(model.KvShape, config));   // this model and format
        var promptTokens = loaded.Tokenizer.Encode("Call me Ishmael. Some years ago", addBos: true);
        var logits = new float[model.Config.VocabSize];
        using (var kv = new PagedKvCache(identity.Plan).CreateSequence())
        {
            model.Forward(promptTokens, kv, logits);
            KvSession.Capture(kv, identity, logits).Save(sessionPath);   // atomic, versioned, checksummed
        }
        var session = KvSession.Load(sessionPath, identity);             // KvSessionException: another model or format, cut, corrupted
        using (var window = ContextWindow.Over(session.Restore()))
        {
            var resumed = generator.Generate(promptTokens, new GenerationOptions { MaxTokens = 8, Sampler = SamplerOptions.Greedy }, window,
                prompt: new PromptState { RestoredLogits = session.Logits });   // no prompt token is run again
            Assert.Equal(8, resumed.GeneratedTokens);
        }

        // -- 6. Offloaded attention: every token stays, each step reads a quarter of the blocks --
        using (var kv = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16") with { Offload = KvOffloadBudget.Parse("25%") }).CreateSequence())
            generator.Generate("Call me Ishmael.", new GenerationOptions { MaxTokens = 8 }, kv);
        dir.Delete(recursive: true);
    }
}
