using Kvq.Model;
using Kvq.Sampling;
using Kvq.Serving;
using Kvq.Tokenizers;

namespace Kvq.Bench.Serving;

/// <summary>`kvq bench serve`: a load test of <see cref="InferenceEngine"/> in process, one row per KV format.</summary>
public static class ServeBenchmark
{
    /// <summary>Runs the workload on a fresh engine (greedy, end-of-generation ignored so every request produces its
    /// output length) and reports throughput, latency percentiles, peak KV bytes and the most sequences running.</summary>
    public static async Task<ServeBenchResult> Run(IBatchedLanguageModel model, ITokenizer tokenizer, string modelName, EngineOptions options,
        ServeWorkload workload, IReadOnlyList<ServeRequest> requests, IProgress<int>? progress = null)
    {
        using var engine = new InferenceEngine(model, tokenizer, options);
        int maxRunning = 0;
        long peakHeld = 0, peakAllocated = 0;
        double heldPerRunning = 0, running = 0, heldSum = 0, unsharedSum = 0, contextSum = 0;
        long busySteps = 0, peakCached = 0;
        engine.StepCompleted += s =>
        {
            maxRunning = Math.Max(maxRunning, s.Running);
            if (s.Running > 0)
            {
                busySteps++;
                heldPerRunning += (double)s.KvHeldBytes / s.Running;
                running += s.Running;
                heldSum += s.KvHeldBytes;
                unsharedSum += s.KvUnsharedBytes;
                contextSum += s.KvContextTokens;
            }
            peakHeld = Math.Max(peakHeld, s.KvHeldBytes);
            peakAllocated = Math.Max(peakAllocated, s.KvBytes);
            peakCached = Math.Max(peakCached, s.KvCachedBytes);
        };
        async Task<RequestTiming> Send(ServeRequest q)
        {
            var stream = engine.Submit(new CompletionRequest
            {
                PromptTokens = q.Prompt, MaxTokens = q.OutputTokens, Sampler = SamplerOptions.Greedy, IgnoreEndOfGeneration = true,
            });
            var times = new List<double>(q.OutputTokens);
            await foreach (var e in stream)
                if (e.Token >= 0) times.Add(e.Elapsed.TotalSeconds);
            var result = await stream.Completion;
            return new RequestTiming(times.ToArray(), result.FinishReason == FinishReason.Length);
        }
        var (timings, seconds) = await LoadGenerator.Run(requests, workload, Send, progress);
        var snap = engine.Snapshot();
        return ServeBenchResult.From("kvq", modelName, options.Kv.Name, workload, timings, seconds, maxRunning, peakHeld,
            peakAllocated, options.KvBudgetBytes, snap.Preemptions, snap.PrefixHitRate, model.Threads) with
        {
            KvHeldPerRunningBytes = busySteps == 0 ? 0 : (long)(heldPerRunning / busySteps),
            MeanRunning = busySteps == 0 ? 0 : running / busySteps,
            KvHeldPerTokenBytes = contextSum == 0 ? 0 : heldSum / contextSum,
            KvHeldVsUnshared = unsharedSum == 0 ? 0 : heldSum / unsharedSum,
            MeanKvContextTokens = busySteps == 0 ? 0 : contextSum / busySteps,
            PeakKvCachedBytes = peakCached,
            SwapOutHost = snap.Swap.OutHost,
            SwapOutFile = snap.Swap.OutFile,
            SwapOutHostBytes = snap.Swap.OutHostBytes,
            SwapOutFileBytes = snap.Swap.OutFileBytes,
            SwapInHost = snap.Swap.InHost,
            SwapInFile = snap.Swap.InFile,
            SwapRecomputes = snap.Swap.Recomputes,
        };
    }
}
