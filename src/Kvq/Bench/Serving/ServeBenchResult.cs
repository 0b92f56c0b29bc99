namespace Kvq.Bench.Serving;

/// <summary>One row of `kvq bench serve` (JSON names are read by other tools and the docs). PeakKvBytes: the most KV
/// the running requests held at once; PeakKvAllocatedBytes: the most allocated (cached prefixes included), never above
/// KvBudgetBytes.</summary>
public sealed record ServeBenchResult(
    string Engine, string Model, string Kv, int Requests, int Completed, int Failed, int Concurrency, int MaxRunning,
    double OutputTokS, double TtftP50Ms, double TtftP99Ms, double ItlP50Ms, double ItlP99Ms, long PeakKvBytes,
    long PeakKvAllocatedBytes, long KvBudgetBytes, long Preemptions, double PrefixHitRate, double Seconds, int Threads, string Workload, string Machine,
    string? FirstError = null)
{
    /// <summary>KV bytes held per running request, averaged over the engine's steps with at least one running: held
    /// bytes / running requests at each step. Beside <see cref="PeakKvBytes"/>, a comparison at equal concurrency: when
    /// prefills bound how many requests run at once (prefix cache off), the peak stops growing with clients while the
    /// bytes each running request costs do not change.</summary>
    public long KvHeldPerRunningBytes { get; init; }

    /// <summary>Running requests averaged over the engine's steps with at least one running.</summary>
    public double MeanRunning { get; init; }

    /// <summary>KV bytes held per token of context the running requests have: held bytes summed over the steps with
    /// at least one running, over the running requests' tokens (prompt and generated so far) summed over the same
    /// steps. A comparison at equal context: it does not depend on how many tokens the runs happen to keep resident
    /// (without the prefix cache most running requests are mid-prefill and hold part of their prompt), only on what
    /// each token of context costs; a prefix held once for N requests lowers it, partial blocks raise it.</summary>
    public double KvHeldPerTokenBytes { get; init; }

    /// <summary>Held bytes over what the same running requests would hold with nothing shared (each one's blocks
    /// counted for it), both summed over the steps with at least one running: 1 without prefix hits or forks.</summary>
    public double KvHeldVsUnshared { get; init; }

    /// <summary>Tokens in the running requests' KV, averaged over the steps with at least one running.</summary>
    public double MeanKvContextTokens { get; init; }

    /// <summary>The most bytes of cached prefixes that no running request referenced (free blocks kept for prefix hits,
    /// not counted in <see cref="PeakKvBytes"/>; the pool reuses them when it needs blocks).</summary>
    public long PeakKvCachedBytes { get; init; }

    /// <summary>Under --preemption swap: preempted requests swapped out to host memory and to files, with their bytes
    /// (host: the arrays; files: their lengths), swapped requests taken back from each tier, and preempted requests
    /// recomputed after all (no room in either tier, a failed write, an unreadable file). All 0 under recompute.</summary>
    public long SwapOutHost { get; init; }
    public long SwapOutFile { get; init; }
    public long SwapOutHostBytes { get; init; }
    public long SwapOutFileBytes { get; init; }
    public long SwapInHost { get; init; }
    public long SwapInFile { get; init; }
    public long SwapRecomputes { get; init; }

    /// <summary>Aggregates per-request timings: throughput over the whole run, percentiles over requests (time to
    /// first token) and over every gap between consecutive tokens of a request (inter-token latency).</summary>
    public static ServeBenchResult From(string engine, string model, string kv, ServeWorkload w, IReadOnlyList<RequestTiming> timings,
        double seconds, int maxRunning, long peakKvBytes, long peakAllocated, long budget, long preemptions, double prefixHitRate, int threads)
    {
        var ttft = new List<double>();
        var itl = new List<double>();
        long tokens = 0;
        int completed = 0;
        foreach (var t in timings)
        {
            if (t.Completed) completed++;
            tokens += t.TokenSeconds.Length;
            if (t.TimeToFirstToken is { } f) ttft.Add(f);
            for (int i = 1; i < t.TokenSeconds.Length; i++) itl.Add(t.TokenSeconds[i] - t.TokenSeconds[i - 1]);
        }
        return new ServeBenchResult(engine, model, kv, timings.Count, completed, timings.Count - completed,
            w.ArrivalRate == null ? w.Concurrency : 0, maxRunning, tokens / Math.Max(seconds, 1e-9),
            Percentile(ttft, 0.5) * 1e3, Percentile(ttft, 0.99) * 1e3, Percentile(itl, 0.5) * 1e3, Percentile(itl, 0.99) * 1e3,
            peakKvBytes, peakAllocated, budget, preemptions, prefixHitRate, seconds, threads, w.Describe(), MachineInfo.Describe(),
            timings.FirstOrDefault(t => t.Error != null)?.Error);
    }

    /// <summary>Nearest-rank percentile; NaN for no values.</summary>
    public static double Percentile(List<double> values, double p)
    {
        if (values.Count == 0) return double.NaN;
        values.Sort();
        int rank = (int)Math.Ceiling(p * values.Count);
        return values[Math.Clamp(rank - 1, 0, values.Count - 1)];
    }
}
