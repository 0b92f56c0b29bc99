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

/// <summary>The code of docs/library.md, run as written (small sizes): every line of the guide's C# blocks is a line
/// of <see cref="TheGuideRunsAsWritten"/>, in the same order (<see cref="EveryLineOfTheGuideIsInTheTest"/> checks), so
/// the guide compiles and runs; if the API drifts, this breaks.</summary>
public class LibraryGuideTests
{
    [Fact]
    public async Task TheGuideRunsAsWritten()
    {
        string modelPath = Fixtures.BooksGguf, textPath = Fixtures.MobyDick;
        var dir = Directory.CreateTempSubdirectory("kvq-guide-");
        string sessionPath = Path.Combine(dir.FullName, "ishmael.kvqs");
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        var cancellationToken = cts.Token;

        // -- 1. Load a model and generate with a cache format, streaming --
        using var loaded = ModelLoader.Load(modelPath);              // GGUF, llama2.c .bin, or a Hugging Face folder
        var model = new Transformer(loaded.Weights, new Parallelism(Environment.ProcessorCount));
        var generator = new Generator(model, loaded.Tokenizer);
        {
            using var kv = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("q8_0")).CreateSequence();
            var stream = generator.GenerateAsync("Call me Ishmael.", new GenerationOptions { MaxTokens = 16, Sampler = SamplerOptions.Greedy },
                kv, cancellationToken);
            var pieces = new System.Text.StringBuilder();
            await foreach (var piece in stream) Console.Write(piece);
            var result = await stream.Completion;                          // the text, token counts, tok/s, why it stopped
            Assert.Equal(16, result.GeneratedTokens);
            Assert.Equal(StopReason.MaxTokens, result.StopReason);
            await foreach (var piece in stream) pieces.Append(piece);    // read once: a second reading sees nothing
            Assert.Equal("", pieces.ToString());
            // The same text as the synchronous call on a fresh sequence (greedy).
            using var again = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("q8_0")).CreateSequence();
            Assert.Equal(result.Text, generator.Generate("Call me Ishmael.", new GenerationOptions { MaxTokens = 16, Sampler = SamplerOptions.Greedy }, again).Text);
        }
        {
            using var kv = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("q8_0")).CreateSequence();
            var result = generator.Generate("Call me Ishmael.", new GenerationOptions { MaxTokens = 16 }, kv, onText: Console.Write);
            Assert.Equal(16, result.GeneratedTokens);
        }

        // -- 2. A token policy on top of the format: keep a quarter of the tokens (H2O) --
        {
            var policy = new KvPolicyConfig(KvPolicyRegistry.Parse("h2o"), KvBudget.Parse("0.25"));   // keep a quarter of the tokens
            using var kv = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16") with { Policy = policy }).CreateSequence();
            generator.Generate("Call me Ishmael.", new GenerationOptions { MaxTokens = 8 }, kv);
        }

        // -- 3. Many requests at once: the serving engine, async streaming --
        {
            using var engine = new InferenceEngine(new Transformer(loaded.Weights, new Parallelism(2), maxBatch: 256), loaded.Tokenizer,
                new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = Bytes.Parse("64MiB") });
            var prompt = loaded.Tokenizer.Encode("It was a dark and stormy night", addBos: true);
            var stream = engine.Submit(new CompletionRequest { PromptTokens = prompt, MaxTokens = 12, Sampler = SamplerOptions.Greedy },
                cancellationToken);
            await foreach (var token in stream) Console.Write(token.Text);
            var done = await stream.Completion;                            // finish reason, usage, time to first token
            Assert.Equal(FinishReason.Length, done.FinishReason);
        }

        // -- 4. Evaluate: perplexity of a format on real text --
        {
            var tokens = loaded.Tokenizer.Encode(TextNormalizer.ReadNormalized(textPath), addBos: false);
            var ppl = new PerplexityEvaluator(model, loaded.Tokenizer.BosId).Evaluate(tokens, ctx: 128, windows: 2, "q4_0", cancel: cancellationToken);
            // ppl.Ppl, ppl.PplError (its standard error), ppl.BitsPerElement, ppl.KvBytesPerToken
            Assert.InRange(ppl.Ppl, 5, 500);
            Assert.True(ppl.PplError > 0 && ppl.PplError < ppl.Ppl, $"{ppl.PplError}");
            _ = typeof(KvQuantProfile); // KVQuant formats: KvCacheConfig.Parse("nuq3-1%") with { Profile = KvQuantProfile.Load(path, weights.Fingerprint) }
        }

        // -- 5. Save a prompt's compressed cache and restore it: session files --
        {
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
        }

        // -- 6. Offloaded attention: every token stays, each step reads a quarter of the blocks --
        {
            using var kv = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16") with { Offload = KvOffloadBudget.Parse("25%") }).CreateSequence();
            generator.Generate("Call me Ishmael.", new GenerationOptions { MaxTokens = 8 }, kv);
        }
        dir.Delete(recursive: true);
    }

    [Fact]
    public void EveryLineOfTheGuideIsInTheTest()
    {
        var root = RepositoryRoot();
        var guide = File.ReadAllLines(Path.Combine(root, "docs", "library.md"));
        var test = File.ReadAllLines(Path.Combine(root, "tests", "Kvq.Tests", "Docs", "LibraryGuideTests.cs"))
            .Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        var blocks = CodeBlocks(guide);
        Assert.True(blocks.Count >= 6, $"expected the guide's six C# blocks, found {blocks.Count}");
        int at = 0;
        foreach (var block in blocks)
            foreach (var line in block)
            {
                int found = Array.IndexOf(test, line, at);
                if (found < 0)
                    Assert.Fail($"docs/library.md line '{line}' is not a line of LibraryGuideTests.TheGuideRunsAsWritten after line {at} " +
                                "(the guide's code must be the test's code, in order)");
                at = found + 1;
            }
    }

    [Fact]
    public async Task CancellingTheTokenStopsAnAsyncGeneration()
    {
        // The reader cancels after its first piece. With a capacity of one piece the generator cannot run ahead of it
        // (it waits while one piece is unread), so when the cancel comes it has handed over at most 3 pieces: the one
        // read, one waiting, one in flight; it stops before the next step. Session 12's version, on the unbounded
        // stream, had to give a starved reader a 4,000-token margin and still could not bound the count.
        using var loaded = ModelLoader.Load(Fixtures.BooksGguf);
        var model = new Transformer(loaded.Weights, new Parallelism(1));
        var generator = new Generator(model, loaded.Tokenizer);
        using var kv = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16")).CreateSequence();
        using var cts = new CancellationTokenSource();
        var stream = generator.GenerateAsync("Call me Ishmael.", new GenerationOptions { MaxTokens = 1000, Sampler = SamplerOptions.Greedy, StreamCapacity = 1 },
            kv, cts.Token);
        int pieces = 0;
        await foreach (var _ in stream)
            if (++pieces == 1) cts.Cancel();
        var result = await stream.Completion;
        Assert.Equal(StopReason.Cancelled, result.StopReason);
        // Each of these greedy tokens is a piece of its own (none is held back as part of a UTF-8 character).
        Assert.InRange(result.GeneratedTokens, 1, 3);
        Assert.InRange(pieces, 1, 3);

        // A token cancelled before the start: the prompt is read, no token is generated.
        using var kv2 = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16")).CreateSequence();
        var none = await generator.GenerateAsync("Call me Ishmael.", new GenerationOptions { MaxTokens = 8 }, kv2, cts.Token).Completion;
        Assert.Equal((StopReason.Cancelled, 0), (none.StopReason, none.GeneratedTokens));
    }

    [Fact]
    public async Task AFailedGenerationFaultsTheStreamAndItsCompletion()
    {
        using var loaded = ModelLoader.Load(Fixtures.StoriesGguf);
        var model = new Transformer(loaded.Weights, new Parallelism(1));
        var generator = new Generator(model, loaded.Tokenizer);
        using var kv = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16")).CreateSequence();
        var tokens = generator.EncodePrompt("Once upon a time", new GenerationOptions());
        // A window of 2 tokens cannot hold the prompt: the generator refuses, on the background thread.
        var stream = generator.GenerateAsync(tokens, new GenerationOptions { MaxTokens = 4 }, ContextWindow.Over(kv, 2));
        var e = await Assert.ThrowsAsync<ArgumentException>(async () => { await foreach (var _ in stream) { } });
        Assert.Contains("more than the context window of 2", e.Message);
        await Assert.ThrowsAsync<ArgumentException>(() => stream.Completion);
    }

    private static List<List<string>> CodeBlocks(string[] lines)
    {
        var blocks = new List<List<string>>();
        List<string>? current = null;
        foreach (var raw in lines)
        {
            var l = raw.Trim();
            if (current == null && l == "```csharp") current = [];
            else if (current != null && l == "```")
            {
                blocks.Add(current);
                current = null;
            }
            else if (current != null && l.Length > 0) current.Add(l);
        }
        return blocks;
    }

    private static string RepositoryRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Kvq.slnx"))) return d.FullName;
        throw new DirectoryNotFoundException("Kvq.slnx not found above " + AppContext.BaseDirectory);
    }
}
