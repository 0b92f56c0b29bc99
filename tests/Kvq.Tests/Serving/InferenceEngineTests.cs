using System.Collections.Concurrent;
using Kvq.Sampling;
using Kvq.Serving;

namespace Kvq.Tests.Serving;

public class InferenceEngineTests
{
    private const long MiB = 1 << 20;

    [Fact]
    public async Task OneRequestGivesTheLoneGeneratorsGreedyTokens()
    {
        var prompt = EngineFixtures.MobyPrompt(2000, 150);
        var expected = EngineFixtures.SoloGreedy(EngineFixtures.Books, prompt, 40);
        using var engine = EngineFixtures.Engine(EngineFixtures.Books, "f16", 16 * MiB);
        var events = new List<TokenEvent>();
        var result = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(prompt, 40)), events);
        Assert.Equal(expected, result.Tokens);
        Assert.Equal(FinishReason.Length, result.FinishReason);
        Assert.Equal(40, result.CompletionTokens);
        Assert.Equal(result.Text, string.Concat(events.Select(e => e.Text)));
        Assert.Equal(Enumerable.Range(0, 40), events.Where(e => e.Token >= 0).Select(e => e.Index));
        Assert.NotNull(result.TimeToFirstToken);
    }

    /// <summary>Twelve requests of different lengths and priorities at once, on a budget too small for all: each
    /// gets exactly its lone greedy tokens, some are preempted, and the bytes in use never pass the budget.</summary>
    [Theory]
    [InlineData(PreemptionMode.Recompute)]
    [InlineData(PreemptionMode.Swap)]
    public async Task ConcurrentRequestsUnderMemoryPressureGiveTheirLoneTokens(PreemptionMode preemption)
    {
        var m = EngineFixtures.Books;
        var prompts = Enumerable.Range(0, 12).Select(i => EngineFixtures.MobyPrompt(1000 + 700 * i, 60 + 37 * i % 150)).ToArray();
        int[] maxTokens = prompts.Select((_, i) => 20 + 9 * i % 40).ToArray();
        var expected = prompts.Select((p, i) => EngineFixtures.SoloGreedy(m, p, maxTokens[i])).ToArray();
        // f16 books-19m: 32 tokens x 8 layers x 2 KV heads x 64 dims x 2 sides x 2 bytes = 128 KiB a block.
        long budget = 40 * 128 * 1024;
        using var engine = EngineFixtures.Engine(m, "f16", budget, stepTokens: 96, preemption: preemption);
        var violations = new ConcurrentBag<string>();
        int maxRunning = 0;
        engine.StepCompleted += s =>
        {
            if (s.KvBytes > s.KvBudgetBytes) violations.Add($"step {s.Step}: {s.KvBytes} bytes > budget {s.KvBudgetBytes}");
            maxRunning = Math.Max(maxRunning, s.Running);
        };
        var streams = EngineFixtures.SubmitTogether(engine,
            prompts.Select((p, i) => EngineFixtures.Greedy(p, maxTokens[i], priority: i % 3)).ToArray());
        var results = await Task.WhenAll(streams.Select(s => EngineFixtures.Collect(s)));
        Assert.Empty(violations);
        for (int i = 0; i < prompts.Length; i++)
            Assert.True(expected[i].SequenceEqual(results[i].Tokens),
                $"request {i} (preempted {results[i].Preemptions}x): expected [{string.Join(",", expected[i])}], got [{string.Join(",", results[i].Tokens)}]");
        Assert.True(results.Sum(r => r.Preemptions) > 0, "the budget was meant to force preemptions");
        Assert.True(maxRunning > 1, "requests were meant to run together");
        Assert.Equal(0, engine.Pool.Cache.Sequences.Pool.HeldBlockCount);
        Assert.Equal(results.Sum(r => r.Preemptions), engine.Snapshot().Preemptions);
    }

    /// <summary>A lossy 3-bit KVQuant cache with an exact sink token, shared prompt prefixes and preemptions: each
    /// request still gets exactly what it gets alone with the same cache format.</summary>
    [Fact]
    public async Task KvQuantRequestsSharingPrefixesUnderPressureGiveTheirLoneTokens()
    {
        var m = EngineFixtures.Books;
        var profile = Cache.Codecs.KvQuant.KvQuantTestData.Profile(EngineFixtures.Model(m).KvShape, tokens: 600);
        var config = Kvq.Cache.KvCacheConfig.Parse("nuq3-1%") with { Profile = profile, SinkTokens = 1 };
        var shared = EngineFixtures.MobyPrompt(20000, 100);
        var prompts = Enumerable.Range(0, 8).Select(i => (int[])[.. shared, .. EngineFixtures.MobyPrompt(30000 + 500 * i, 30 + 11 * i).AsSpan(1)]).ToArray();
        var expected = prompts.Select(p => EngineFixtures.SoloGreedy(m, p, 24, config)).ToArray();
        var probe = new KvPool(EngineFixtures.Model(m).KvShape, config, 64 << 20);
        long budget = 30 * probe.BytesPerBlock + probe.Cache.SinkBankBytes;
        using var engine = EngineFixtures.Engine(m, config, budget, stepTokens: 64);
        var results = await Task.WhenAll(prompts.Select(p => EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(p, 24)))));
        for (int i = 0; i < prompts.Length; i++)
            Assert.True(expected[i].SequenceEqual(results[i].Tokens), $"request {i} (preempted {results[i].Preemptions}x, cached {results[i].CachedPromptTokens})");
        Assert.Contains(results, r => r.CachedPromptTokens == 96);
    }

    [Fact]
    public async Task CancellingHalfTheRequestsMidStreamReturnsAllTheirBlocks()
    {
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f32", 4 * MiB);
        var prompts = Enumerable.Range(0, 10).Select(i => EngineFixtures.StoriesPrompt($"Once upon a time there was a {i} little")).ToArray();
        var results = await EngineFixtures.ReadCancellingSome(engine, prompts.Select((p, i) => new CompletionRequest
        {
            PromptTokens = p, MaxTokens = 200, Sampler = new SamplerOptions { Seed = (ulong)i },
        }).ToArray(), i => i % 2 == 0, after: 5);
        for (int i = 0; i < results.Length; i++)
        {
            if (i % 2 == 0)
            {
                Assert.Equal(FinishReason.Cancelled, results[i].FinishReason);
                Assert.InRange(results[i].CompletionTokens, 5, 199);
            }
            else Assert.NotEqual(FinishReason.Cancelled, results[i].FinishReason);
        }
        // Every block is back: nothing held, and the pool's free list has all of them.
        var pool = engine.Pool.Cache.Sequences.Pool;
        Assert.Equal(0, pool.HeldBlockCount);
        Assert.Equal(pool.BlockCount, pool.FreeBlockCount);
        Assert.Equal(0, engine.Snapshot().Running);
    }

    [Fact]
    public async Task ARepeatedPromptIsServedFromThePrefixCache()
    {
        var prompt = EngineFixtures.MobyPrompt(7000, 200);
        using var engine = EngineFixtures.Engine(EngineFixtures.Books, "f16", 16 * MiB);
        var first = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(prompt, 12)));
        var second = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(prompt, 12)));
        Assert.Equal(0, first.CachedPromptTokens);
        Assert.Equal(192, second.CachedPromptTokens); // the prompt's 6 full blocks of 32 (201 tokens)
        Assert.Equal(first.Tokens, second.Tokens);
        Assert.InRange(engine.Snapshot().PrefixHitRate, 0.47, 0.48);
    }

    [Fact]
    public async Task WithoutThePrefixCacheNothingIsReused()
    {
        var prompt = EngineFixtures.MobyPrompt(7000, 100);
        using var engine = EngineFixtures.Engine(EngineFixtures.Books, "f16", 16 * MiB, prefixCache: false);
        await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(prompt, 4)));
        var second = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(prompt, 4)));
        Assert.Equal(0, second.CachedPromptTokens);
    }

    [Fact]
    public async Task StopStringsAndEndOfGenerationFinishWithStop()
    {
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f32", 4 * MiB);
        var r = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(EngineFixtures.StoriesPrompt("Once upon a time"), 100) with
        {
            StopStrings = ["Lily"],
        }));
        Assert.Equal(FinishReason.Stop, r.FinishReason);
        Assert.Equal(", there was a little girl named ", r.Text);
    }

    [Fact]
    public async Task LogprobsAreTheModelsLogSoftmax()
    {
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f32", 4 * MiB);
        var events = new List<TokenEvent>();
        await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(EngineFixtures.StoriesPrompt("Once upon a time"), 6) with
        {
            Logprobs = true,
            TopLogprobs = 3,
        }), events);
        foreach (var e in events.Where(e => e.Token >= 0))
        {
            Assert.NotNull(e.TopLogprobs);
            Assert.Equal(3, e.TopLogprobs!.Count);
            // Greedy: the chosen token is the most likely one, and its logprob is the top entry's.
            Assert.Equal(e.Token, e.TopLogprobs[0].Token);
            Assert.Equal(e.Logprob, e.TopLogprobs[0].Logprob);
            Assert.True(e.TopLogprobs[0].Logprob >= e.TopLogprobs[1].Logprob && e.TopLogprobs[1].Logprob >= e.TopLogprobs[2].Logprob);
            Assert.InRange(e.Logprob, -20f, 0f);
        }
    }

    public static TheoryData<string, CompletionRequest, string> BadRequests()
    {
        var ok = EngineFixtures.StoriesPrompt("Once upon a time");
        return new()
        {
            { "empty prompt", new CompletionRequest { PromptTokens = [] }, "invalid_value" },
            { "token outside vocab", new CompletionRequest { PromptTokens = [1, 512] }, "invalid_value" },
            { "max tokens 0", new CompletionRequest { PromptTokens = ok, MaxTokens = 0 }, "invalid_value" },
            { "max tokens negative", new CompletionRequest { PromptTokens = ok, MaxTokens = -5 }, "invalid_value" },
            { "temperature NaN", new CompletionRequest { PromptTokens = ok, Sampler = new SamplerOptions { Temperature = float.NaN } }, "invalid_value" },
            { "temperature negative", new CompletionRequest { PromptTokens = ok, Sampler = new SamplerOptions { Temperature = -1 } }, "invalid_value" },
            { "top_p 2", new CompletionRequest { PromptTokens = ok, Sampler = new SamplerOptions { TopP = 2 } }, "invalid_value" },
            { "min_p 1.5", new CompletionRequest { PromptTokens = ok, Sampler = new SamplerOptions { MinP = 1.5f } }, "invalid_value" },
            { "top_k -1", new CompletionRequest { PromptTokens = ok, Sampler = new SamplerOptions { TopK = -1 } }, "invalid_value" },
            { "repeat penalty 0", new CompletionRequest { PromptTokens = ok, Sampler = new SamplerOptions { RepetitionPenalty = 0 } }, "invalid_value" },
            { "top logprobs 21", new CompletionRequest { PromptTokens = ok, Logprobs = true, TopLogprobs = 21 }, "invalid_value" },
            { "prompt over context", new CompletionRequest { PromptTokens = Enumerable.Repeat(1, 2048).ToArray() }, "context_length_exceeded" },
        };
    }

    [Theory]
    [MemberData(nameof(BadRequests))]
    public void BadRequestsAreRefusedAtOnce(string what, CompletionRequest request, string code)
    {
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f32", 4 * MiB);
        var e = Assert.Throws<EngineRequestException>(() => engine.Submit(request));
        Assert.True(code == e.Code, $"{what}: code {e.Code}, message {e.Message}");
        Assert.Equal(0, engine.Snapshot().Waiting);
    }

    [Fact]
    public void APromptLargerThanTheWholeBudgetIsRefusedNotQueued()
    {
        // f32 stories260K: 32 tokens x 5 layers x 4 KV heads x 8 dims x 2 sides x 4 bytes = 40 KiB a block; 8 blocks.
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f32", 8 * 40 * 1024);
        var prompt = Enumerable.Repeat(300, 250).ToArray();
        var e = Assert.Throws<EngineRequestException>(() => engine.Submit(new CompletionRequest { PromptTokens = prompt }));
        Assert.Equal("kv_budget_exceeded", e.Code);
        Assert.Contains("250 tokens", e.Message);
    }

    [Fact]
    public void ABudgetThatHoldsNoBlockIsRefused()
    {
        var e = Assert.Throws<EngineRequestException>(() => EngineFixtures.Engine(EngineFixtures.Stories, "f32", 1000));
        Assert.Equal("kv_budget_exceeded", e.Code);
    }

    [Fact]
    public async Task DisposingTheEngineCancelsEveryPendingRequest()
    {
        var engine = EngineFixtures.Engine(EngineFixtures.Books, "f16", 16 * MiB, maxRunning: 2);
        var streams = Enumerable.Range(0, 6).Select(i => engine.Submit(EngineFixtures.Greedy(EngineFixtures.MobyPrompt(100 * i, 300), 500))).ToArray();
        await streams[0].FirstAsync();
        engine.Dispose();
        var results = await Task.WhenAll(streams.Select(s => s.Completion)).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.All(results, r => Assert.Equal(FinishReason.Cancelled, r.FinishReason));
        Assert.Equal("engine_stopped", Assert.Throws<EngineRequestException>(() => engine.Submit(EngineFixtures.Greedy([1, 2], 3))).Code);
    }

    [Fact]
    public async Task ARequestThatOutgrowsTheWholeBudgetEndsWithLength()
    {
        // 8 blocks of 32 tokens = 256 tokens of room; the request alone asks for more.
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f32", 8 * 40 * 1024);
        var r = await EngineFixtures.Collect(engine.Submit(new CompletionRequest
        {
            PromptTokens = EngineFixtures.StoriesPrompt("Once upon a time"), MaxTokens = 400, Sampler = new SamplerOptions { Seed = 3 },
        }));
        Assert.Equal(FinishReason.Length, r.FinishReason);
        // 256 tokens in the cache, plus the last one sampled (it never needs a slot).
        Assert.Equal(257, r.PromptTokens + r.CompletionTokens);
    }
}

/// <summary>A fault in a model step ends the requests in that step; the engine serves the next ones.</summary>
public class InferenceEngineFaultTests
{
    /// <summary>The real model, except that a step carrying <see cref="Poison"/> throws.</summary>
    private sealed class FaultyModel(Kvq.Model.Transformer inner) : Kvq.Model.IBatchedLanguageModel
    {
        public const int Poison = 313;
        public Kvq.Model.ModelConfig Config => inner.Config;
        public Kvq.Cache.KvShape KvShape => inner.KvShape;
        public string Device => inner.Device;
        public int Threads => inner.Threads;
        public int MaxBatchTokens => inner.MaxBatchTokens;
        public void Forward(ReadOnlySpan<int> tokens, Kvq.Cache.IKvSequence kv, Span<float> lastLogits, Span<float> allLogits = default) =>
            inner.Forward(tokens, kv, lastLogits, allLogits);
        public Kvq.Cache.IKvSequence CreateSequence(Kvq.Cache.KvCacheConfig config, int maxTokens) => inner.CreateSequence(config, maxTokens);
        public void ForwardBatch(ReadOnlySpan<int> tokens, ReadOnlySpan<Kvq.Model.BatchSegment> segments, Span<float> logits)
        {
            if (tokens.Contains(Poison)) throw new InvalidOperationException("poisoned step");
            inner.ForwardBatch(tokens, segments, logits);
        }
    }

    [Fact]
    public async Task AFailingStepEndsItsRequestsNotTheEngine()
    {
        var m = EngineFixtures.Stories;
        using var engine = new InferenceEngine(new FaultyModel(EngineFixtures.Model(m)), m.Tokenizer, new EngineOptions
        {
            Kv = Kvq.Cache.KvCacheConfig.Parse("f32"), KvBudgetBytes = 4 << 20,
        });
        var bad = engine.Submit(EngineFixtures.Greedy([1, 50, FaultyModel.Poison, 60], 5));
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => bad.Completion);
        Assert.Contains("poisoned step", e.Message);
        await Assert.ThrowsAsync<InvalidOperationException>(async () => { await foreach (var _ in bad) { } });
        var good = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(EngineFixtures.StoriesPrompt("Once upon a time"), 8)));
        Assert.Equal(8, good.CompletionTokens);
        Assert.Equal(0, engine.Pool.Cache.Sequences.Pool.HeldBlockCount);
    }

    [Fact]
    public async Task AThrowingStepHandlerFailsTheRequestsInFlightAndTheEngineGoesOn()
    {
        using var engine = EngineFixtures.Engine(EngineFixtures.Stories, "f32", 4 << 20);
        int throws = 1;
        engine.StepCompleted += _ =>
        {
            if (Interlocked.Exchange(ref throws, 0) == 1) throw new InvalidOperationException("handler fault");
        };
        var first = engine.Submit(EngineFixtures.Greedy(EngineFixtures.StoriesPrompt("Once upon a time"), 30));
        await Assert.ThrowsAsync<InvalidOperationException>(() => first.Completion);
        var next = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(EngineFixtures.StoriesPrompt("Once upon a time"), 8)));
        Assert.Equal(8, next.CompletionTokens);
        Assert.Equal(0, engine.Pool.Cache.Sequences.Pool.HeldBlockCount);
    }
}
