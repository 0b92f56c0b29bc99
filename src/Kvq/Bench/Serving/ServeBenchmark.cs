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
        long peak = 0;
        engine.StepCompleted += s =>
        {
            maxRunning = Math.Max(maxRunning, s.Running);
            peak = Math.Max(peak, s.KvBytes);
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
        return ServeBenchResult.From("kvq", modelName, options.Kv.Name, workload, timings, seconds, maxRunning, peak,
            options.KvBudgetBytes, snap.Preemptions, snap.PrefixHitRate, model.Threads);
    }
}
