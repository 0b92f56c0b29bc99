using Kvq.Cache;
using Kvq.Generation;
using Kvq.Model;
using Kvq.Sampling;
using Kvq.Serving;
using Kvq.Tensors;

namespace Kvq.Tests.Serving;

/// <summary>Models, prompts and solo references for the engine tests.</summary>
internal static class EngineFixtures
{
    private static readonly Lazy<LoadedModel> StoriesModel = new(() => ModelLoader.Load(Fixtures.StoriesGguf));
    private static readonly Lazy<LoadedModel> BooksModel = new(() => ModelLoader.Load(Fixtures.BooksGguf));
    private static readonly Lazy<int[]> Moby = new(() =>
        BooksModel.Value.Tokenizer.Encode(TextFixtures.Read(Fixtures.MobyDick), addBos: false));

    public static LoadedModel Stories => StoriesModel.Value;
    public static LoadedModel Books => BooksModel.Value;

    /// <summary>A model instance of its own (run state is per instance) with room for <paramref name="stepTokens"/>.</summary>
    public static Transformer Model(LoadedModel m, int stepTokens = 128) => new(m.Weights, new Parallelism(2), stepTokens);

    /// <summary>BOS + <paramref name="length"/> tokens of Moby Dick from <paramref name="offset"/>.</summary>
    public static int[] MobyPrompt(int offset, int length)
    {
        var p = new int[length + 1];
        p[0] = Books.Tokenizer.BosId;
        Moby.Value.AsSpan(offset, length).CopyTo(p.AsSpan(1));
        return p;
    }

    public static int[] StoriesPrompt(string text) => Stories.Tokenizer.Encode(text, addBos: true);

    public static InferenceEngine Engine(LoadedModel m, string kv, long budget, int maxRunning = 64, int stepTokens = 128,
        bool prefixCache = true, PreemptionMode preemption = PreemptionMode.Recompute) =>
        Engine(m, KvCacheConfig.Parse(kv), budget, maxRunning, stepTokens, prefixCache, preemption);

    public static InferenceEngine Engine(LoadedModel m, KvCacheConfig kv, long budget, int maxRunning = 64, int stepTokens = 128,
        bool prefixCache = true, PreemptionMode preemption = PreemptionMode.Recompute) =>
        new(Model(m, stepTokens), m.Tokenizer, new EngineOptions
        {
            Kv = kv,
            KvBudgetBytes = budget,
            MaxRunning = maxRunning,
            PrefixCache = prefixCache,
            Preemption = preemption,
        });

    public static CompletionRequest Greedy(int[] prompt, int maxTokens, int priority = 0) =>
        new() { PromptTokens = prompt, MaxTokens = maxTokens, Sampler = SamplerOptions.Greedy, Priority = priority };

    /// <summary>The tokens <see cref="Generator"/> produces for the prompt on its own, greedy, outside the engine.</summary>
    public static int[] SoloGreedy(LoadedModel m, int[] prompt, int maxTokens, string kv = "f16") =>
        SoloGreedy(m, prompt, maxTokens, KvCacheConfig.Parse(kv));

    public static int[] SoloGreedy(LoadedModel m, int[] prompt, int maxTokens, KvCacheConfig kv)
    {
        var model = Model(m, 64);
        var ids = new List<int>();
        var sampler = new Sampler(SamplerOptions.Greedy);
        using var seq = new PagedKvCache(model.KvShape, kv).CreateSequence();
        var logits = new float[model.Config.VocabSize];
        model.Forward(prompt, seq, logits);
        var history = new List<int>(prompt);
        for (int i = 0; i < maxTokens; i++)
        {
            int next = sampler.Sample(logits, history.ToArray());
            if (m.Tokenizer.IsEndOfGeneration(next)) break;
            ids.Add(next);
            history.Add(next);
            if (i + 1 < maxTokens) model.Forward([next], seq, logits);
        }
        return ids.ToArray();
    }

    public static async Task<CompletionResult> Collect(RequestStream stream, List<TokenEvent>? events = null)
    {
        await foreach (var e in stream) events?.Add(e);
        return await stream.Completion;
    }

    /// <summary>
    /// Submits <paramref name="requests"/> so that the engine takes them all in the same step: a one-token opener is
    /// submitted first and the engine thread is held inside that step's <see cref="InferenceEngine.StepCompleted"/>
    /// (10 s at most) until every request is queued.
    /// </summary>
    /// <remarks>
    /// Submitting in a loop races the engine thread: under CI load it admitted and ran the first requests before the
    /// rest arrived, so a budget meant to force preemptions sometimes forced none. The opener (a 4-token prompt, one
    /// token out) ends by itself and is not returned.
    /// </remarks>
    public static RequestStream[] SubmitTogether(InferenceEngine engine, IReadOnlyList<CompletionRequest> requests)
    {
        using var held = new ManualResetEventSlim();
        using var gate = new ManualResetEventSlim();
        int first = 0;
        void Hold(EngineSnapshot _)
        {
            if (Interlocked.Exchange(ref first, 1) != 0) return;
            held.Set();
            gate.Wait(TimeSpan.FromSeconds(10));
        }
        engine.StepCompleted += Hold;
        try
        {
            var opener = engine.Submit(Greedy(MobyPrompt(0, 4), 1));
            if (!held.Wait(TimeSpan.FromSeconds(30))) throw new TimeoutException("the engine did not run the opener's step");
            var streams = requests.Select(r => engine.Submit(r)).ToArray();
            gate.Set();
            _ = Collect(opener); // it ends by itself after its one token; nothing waits on it
            return streams;
        }
        finally
        {
            gate.Set();
            engine.StepCompleted -= Hold;
        }
    }

    /// <summary>
    /// Submits <paramref name="requests"/> at once and reads every stream; a request for which
    /// <paramref name="cancel"/> holds is cancelled by its reader once it has seen <paramref name="after"/> tokens.
    /// </summary>
    /// <remarks>
    /// The engine runs ahead of its readers (a token stream is unbounded) and a small model finishes a request in a
    /// few milliseconds, so a request could end before its reader got to cancel it. A timed brake (10 ms per step)
    /// still lost that race twice under CI load. So while a request to be cancelled has not been, each step waits
    /// (10 s at most, so a fault cannot hang the suite) until the readers have taken every token the engine made since
    /// this began: a reader then cancels before the engine makes its request's next token.
    /// </remarks>
    public static async Task<CompletionResult[]> ReadCancellingSome(InferenceEngine engine,
        IReadOnlyList<CompletionRequest> requests, Func<int, bool> cancel, int after)
    {
        var sources = requests.Select(_ => new CancellationTokenSource()).ToArray();
        long start = engine.Snapshot().GeneratedTokens, read = 0;
        bool Pending() => sources.Where((_, i) => cancel(i)).Any(s => !s.IsCancellationRequested);
        void Brake(EngineSnapshot s)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (Pending() && s.GeneratedTokens - start > Interlocked.Read(ref read) && clock.Elapsed.TotalSeconds < 10)
                Thread.Sleep(1);
        }
        engine.StepCompleted += Brake;
        try
        {
            var streams = requests.Select((r, i) => engine.Submit(r, sources[i].Token)).ToArray();
            return await Task.WhenAll(streams.Select(async (stream, i) =>
            {
                int seen = 0;
                await foreach (var e in stream)
                {
                    if (e.Token < 0) continue; // the text-only tail of a finished request
                    if (++seen == after && cancel(i)) sources[i].Cancel();
                    Interlocked.Increment(ref read); // after the cancel: the engine waits for it
                }
                return await stream.Completion;
            }));
        }
        finally
        {
            engine.StepCompleted -= Brake;
            foreach (var s in sources) s.Dispose();
        }
    }
}
