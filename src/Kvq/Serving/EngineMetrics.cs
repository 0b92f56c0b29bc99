using System.Diagnostics.Metrics;

namespace Kvq.Serving;

/// <summary>
/// The engine's instruments on a <see cref="Meter"/> named "Kvq.Serving", for OpenTelemetry, Prometheus or
/// dotnet-counters: queue length, running sequences, KV blocks used and free (tagged with the format), prefix-cache
/// hits, preemptions, time to first token and inter-token latency (seconds).
/// </summary>
public sealed class EngineMetrics : IDisposable
{
    public const string MeterName = "Kvq.Serving";
    private readonly Meter _meter;

    internal EngineMetrics(Func<EngineSnapshot> snapshot, string format)
    {
        _meter = new Meter(MeterName);
        var tag = new KeyValuePair<string, object?>("kv.format", format);
        _meter.CreateObservableGauge("kvq.engine.requests.waiting", () => snapshot().Waiting, "{request}", "Requests waiting for KV blocks");
        _meter.CreateObservableGauge("kvq.engine.requests.running", () => snapshot().Running, "{request}", "Requests prefilling or decoding");
        _meter.CreateObservableGauge("kvq.engine.kv.blocks.used", () => new Measurement<int>(snapshot().BlocksUsed, tag), "{block}", "KV blocks held by running sequences");
        _meter.CreateObservableGauge("kvq.engine.kv.blocks.free", () => new Measurement<int>(snapshot().BlocksFree, tag), "{block}", "KV blocks free (cached prefixes included)");
        _meter.CreateObservableGauge("kvq.engine.kv.bytes", () => new Measurement<long>(snapshot().KvBytes, tag), "By", "KV bytes allocated");
        _meter.CreateObservableGauge("kvq.engine.kv.held_bytes", () => new Measurement<long>(snapshot().KvHeldBytes, tag), "By", "KV bytes held by running requests (shared blocks once)");
        _meter.CreateObservableGauge("kvq.engine.kv.unshared_bytes", () => new Measurement<long>(snapshot().KvUnsharedBytes, tag), "By", "KV bytes the running requests would hold if nothing were shared");
        _meter.CreateObservableGauge("kvq.engine.kv.cached_bytes", () => new Measurement<long>(snapshot().KvCachedBytes, tag), "By", "KV bytes of cached prefixes no running request references");
        _meter.CreateObservableGauge("kvq.engine.kv.context_tokens", () => snapshot().KvContextTokens, "{token}", "Tokens in the running requests' KV");
        // Swap preemption, per tier (all zero without it).
        var host = new KeyValuePair<string, object?>("tier", "host");
        var file = new KeyValuePair<string, object?>("tier", "file");
        Measurement<long>[] PerTier(long onHost, long inFiles) => [new(onHost, host), new(inFiles, file)];
        _meter.CreateObservableCounter("kvq.engine.swap.out", () => PerTier(snapshot().Swap.OutHost, snapshot().Swap.OutFile), "{sequence}",
            "Preempted sequences swapped out, by tier");
        _meter.CreateObservableCounter("kvq.engine.swap.out_bytes", () => PerTier(snapshot().Swap.OutHostBytes, snapshot().Swap.OutFileBytes), "By",
            "Bytes swapped out (host: the arrays; file: the files' lengths), by tier");
        _meter.CreateObservableCounter("kvq.engine.swap.in", () => PerTier(snapshot().Swap.InHost, snapshot().Swap.InFile), "{sequence}",
            "Swapped sequences taken back, by tier");
        _meter.CreateObservableCounter("kvq.engine.swap.in_bytes", () => PerTier(snapshot().Swap.InHostBytes, snapshot().Swap.InFileBytes), "By",
            "Bytes taken back from the swap tiers, by tier");
        _meter.CreateObservableCounter("kvq.engine.swap.recomputes", () => snapshot().Swap.Recomputes, "{sequence}",
            "Under swap preemption, sequences recomputed instead (no room in the swap tiers, a failed write, an unreadable file)");
        _meter.CreateObservableGauge("kvq.engine.swap.held_bytes", () => PerTier(snapshot().Swap.HeldHostBytes, snapshot().Swap.HeldFileBytes), "By",
            "Bytes swapped-out sequences hold now, by tier");
        PromptTokens = _meter.CreateCounter<long>("kvq.engine.prompt_tokens", "{token}", "Prompt tokens submitted");
        PrefixHitTokens = _meter.CreateCounter<long>("kvq.engine.prefix_cache.hit_tokens", "{token}", "Prompt tokens found in the prefix cache");
        GeneratedTokens = _meter.CreateCounter<long>("kvq.engine.generated_tokens", "{token}", "Tokens generated");
        Preemptions = _meter.CreateCounter<long>("kvq.engine.preemptions", "{preemption}", "Sequences preempted (blocks taken back)");
        Requests = _meter.CreateCounter<long>("kvq.engine.requests", "{request}", "Requests finished, by finish reason");
        TimeToFirstToken = _meter.CreateHistogram<double>("kvq.engine.time_to_first_token", "s", "From submission to the first token");
        InterTokenLatency = _meter.CreateHistogram<double>("kvq.engine.inter_token_latency", "s", "Between consecutive tokens of a request");
    }

    internal Counter<long> PromptTokens { get; }
    internal Counter<long> PrefixHitTokens { get; }
    internal Counter<long> GeneratedTokens { get; }
    internal Counter<long> Preemptions { get; }
    internal Counter<long> Requests { get; }
    internal Histogram<double> TimeToFirstToken { get; }
    internal Histogram<double> InterTokenLatency { get; }

    public void Dispose() => _meter.Dispose();
}

/// <summary>The engine's state after its latest step (read from any thread). <see cref="KvBytes"/>: allocated (block
/// arenas, which keep cached prefixes, plus the outside-block bytes of running sequences and the sink bank) — never
/// above <see cref="KvBudgetBytes"/>; <see cref="KvHeldBytes"/>: what the running requests hold (the distinct blocks
/// they reference, a shared block once, and their outside-block bytes: staging, sink copies). Not held: cached
/// prefixes no running request references (<see cref="KvCachedBytes"/>) and blocks only promised at admission.</summary>
public sealed record EngineSnapshot(
    long Step, int Waiting, int Running, int BlocksUsed, int BlocksFree, long KvBytes, long KvHeldBytes, long KvBudgetBytes,
    long Preemptions, long PromptTokens, long PrefixHitTokens, long GeneratedTokens)
{
    /// <summary>Tokens in the running requests' KV (prompt and generated tokens appended so far, summed over them).</summary>
    public long KvContextTokens { get; init; }

    /// <summary>What the running requests would hold if nothing were shared: each one's blocks counted for it. Equal
    /// to <see cref="KvHeldBytes"/> without prefix hits; <see cref="KvHeldBytes"/> / this is what sharing saves now.</summary>
    public long KvUnsharedBytes { get; init; }

    /// <summary>Bytes of cached prefixes that no running request references (free blocks kept for prefix hits until
    /// the pool needs them).</summary>
    public long KvCachedBytes { get; init; }

    /// <summary>What swap preemption did (all zero unless <see cref="EngineOptions.Preemption"/> is
    /// <see cref="PreemptionMode.Swap"/>).</summary>
    public SwapStats Swap { get; init; }

    /// <summary>Share of admitted prompt tokens found in the prefix cache.</summary>
    public double PrefixHitRate => PromptTokens == 0 ? 0 : (double)PrefixHitTokens / PromptTokens;
}

/// <summary>Swap preemption's counts since the engine started: sequences swapped out and taken back per tier (host
/// memory, files) with their bytes (host: the arrays; file: the files' lengths), <see cref="Recomputes"/> (preempted
/// sequences recomputed after all: no room in either tier, a failed write, a sequence that cannot be swapped, or a file
/// that could not be read back), and the bytes held in each tier now.</summary>
public readonly record struct SwapStats(
    long OutHost, long OutFile, long OutHostBytes, long OutFileBytes, long InHost, long InFile, long InHostBytes, long InFileBytes,
    long Recomputes, long HeldHostBytes, long HeldFileBytes);
