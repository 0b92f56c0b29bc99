using System.Collections.Concurrent;
using Kvq.Model;
using Kvq.Sampling;
using Kvq.Tokenizers;

namespace Kvq.Serving;

/// <summary>
/// Serves many requests at once over one model and one compressed, paged KV cache. Requests are submitted from any
/// thread and stream their tokens back; a scheduler loop on the engine's own thread runs one batched step at a time
/// (decode tokens of running sequences plus prompt chunks), admits requests by exact block bytes, preempts under
/// memory pressure and reuses cached prompt prefixes. Dispose it to stop: pending requests finish as cancelled.
/// </summary>
public sealed class InferenceEngine : IDisposable
{
    private readonly ILanguageModel _model;
    private readonly IBatchedLanguageModel? _batched;
    private readonly Scheduler _scheduler;
    private readonly ConcurrentQueue<EngineRequest> _inbox = new();
    private readonly ConcurrentQueue<EngineRequest> _cancels = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Thread _thread;
    private readonly CancellationTokenSource _stop = new();
    private readonly int _stepTokens;
    private readonly int _context;
    private long _nextId;
    private int _queued;
    private volatile EngineSnapshot _snapshot;
    private int[] _tokens = [];
    private float[] _logits = [];
    private BatchSegment[] _segments = [];
    private long _generated;
    private readonly RecentPrefixes? _recent;

    public InferenceEngine(ILanguageModel model, ITokenizer tokenizer, EngineOptions options)
    {
        // The pool below is host memory: a model that reads only its device caches would fail every request's first step.
        if (!model.AttendsOverHostCaches)
            throw new ArgumentException($"the serving engine keeps its KV pool in host memory, and the model on {model.Device} attends " +
                                        "only over its own device caches: give the engine a CPU model", nameof(model));
        _model = model;
        _batched = model as IBatchedLanguageModel;
        Tokenizer = tokenizer;
        Options = options;
        if (options.MaxRunning < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxRunning must be at least 1");
        _stepTokens = Math.Min(options.StepTokens ?? int.MaxValue, _batched?.MaxBatchTokens ?? 512);
        if (_stepTokens < Scheduler.ChunkAlignment)
            throw new ArgumentOutOfRangeException(nameof(options), $"a step must carry at least {Scheduler.ChunkAlignment} tokens");
        if (options.Kv.Policy != null && (options.PolicyChunkTokens < Scheduler.ChunkAlignment || options.PolicyChunkTokens > _stepTokens ||
                                          options.PolicyChunkTokens % Scheduler.ChunkAlignment != 0))
            throw new ArgumentOutOfRangeException(nameof(options), $"PolicyChunkTokens {options.PolicyChunkTokens}: under a token policy the prompt " +
                $"chunk must be a multiple of {Scheduler.ChunkAlignment} and at most the step's {_stepTokens} tokens");
        _context = options.ContextTokens ?? model.Config.ContextLength;
        Pool = new KvPool(model.KvShape, options.Kv, options.KvBudgetBytes, options.MaxRunning, options.PolicyChunkTokens);
        // Under a token policy a prefix is the policy's state after it, kept per prompt chunk (sink tokens: not yet).
        if (options.PrefixCache && Pool.HasPolicy && options.Kv.SinkTokens == 0) Pool.Cache.SharePolicyPrefixes(options.PolicyChunkTokens);
        if (options.HostPrefixBytes < 0 || options.PrefixDiskBytes < 0)
            throw new ArgumentOutOfRangeException(nameof(options), $"HostPrefixBytes ({options.HostPrefixBytes}) and PrefixDiskBytes " +
                                                                   $"({options.PrefixDiskBytes}) must be >= 0");
        if (options.HostPrefixBytes > 0 || options.PrefixDiskBytes > 0)
        {
            if (!options.PrefixCache)
                throw new ArgumentException("HostPrefixBytes and PrefixDiskBytes keep evicted prefixes: they need PrefixCache", nameof(options));
            var disk = options.PrefixDiskBytes > 0
                ? new Cache.Storage.PrefixFileTier(Pool.Cache.Plan, options.PrefixDiskDirectory ?? Path.GetTempPath(), options.PrefixDiskBytes)
                : null;
            Pool.Cache.KeepEvictedPrefixes(options.HostPrefixBytes, disk);
            _prefixDisk = disk;
        }
        _swap = SwapSpaceFor(options, Pool);
        if (options.PromptCache is { } store && options.PrefixCache && Pool.Cache.SupportsPrefixSharing)
        {
            _recent = new RecentPrefixes(store.MaxPrefixes, Pool.BlockTokens);
            store.Load(Pool.Cache, _recent);
        }
        // After the tiers (their folders are probed and swept first): a refused folder leaves no meter behind.
        _snapshot = new EngineSnapshot(0, 0, 0, 0, 0, 0, 0, options.KvBudgetBytes, 0, 0, 0, 0);
        Metrics = new EngineMetrics(() => _snapshot, options.Kv.Name);
        _scheduler = new Scheduler(Pool, options, _stepTokens, Metrics)
        {
            OutOfBudget = r => Finish(r, FinishReason.Length), Recent = _recent, Swap = _swap,
        };
        _snapshot = Snapshot(0);
        _thread = new Thread(Loop) { IsBackground = true, Name = "kvq-engine" };
        _thread.Start();
    }

    /// <summary>The tiers swap preemption keeps sequences in (null unless <see cref="PreemptionMode.Swap"/> without a
    /// token policy). Read it from the engine thread (<see cref="StepCompleted"/>) or once requests are done.</summary>
    public Cache.Storage.SwapSpace? Swap => _swap;

    /// <summary>The prefix cache's disk tier (null unless <see cref="EngineOptions.PrefixDiskBytes"/>).</summary>
    public Cache.Storage.PrefixFileTier? PrefixDisk => _prefixDisk;

    private readonly Cache.Storage.SwapSpace? _swap;
    private readonly Cache.Storage.PrefixFileTier? _prefixDisk;

    /// <summary>The swap tiers of <paramref name="options"/> (null: preemption recomputes); bad budgets are refused here.</summary>
    private static Cache.Storage.SwapSpace? SwapSpaceFor(EngineOptions options, KvPool pool)
    {
        if (options.SwapHostBytes < 0 || options.SwapFileBytes < 0)
            throw new ArgumentOutOfRangeException(nameof(options), $"SwapHostBytes ({options.SwapHostBytes}) and SwapFileBytes ({options.SwapFileBytes}) must be >= 0");
        if (options.Preemption != PreemptionMode.Swap)
        {
            if (options.SwapHostBytes != null || options.SwapFileBytes > 0)
                throw new ArgumentException("SwapHostBytes and SwapFileBytes are for PreemptionMode.Swap", nameof(options));
            return null;
        }
        // Under a token policy preemption recomputes (the policy's state is per chunk).
        if (pool.HasPolicy) return null;
        long host = options.SwapHostBytes ?? long.MaxValue;
        if (host == 0 && options.SwapFileBytes == 0)
            throw new ArgumentOutOfRangeException(nameof(options), "swap preemption with SwapHostBytes 0 needs SwapFileBytes above 0");
        return new Cache.Storage.SwapSpace(pool.Cache.Plan, host, options.SwapFileBytes > 0 ? options.SwapDirectory ?? Path.GetTempPath() : null,
            options.SwapFileBytes);
    }

    public ITokenizer Tokenizer { get; }
    public EngineOptions Options { get; }
    public ILanguageModel Model => _model;
    /// <summary>The block pool and its byte budget.</summary>
    public KvPool Pool { get; }
    public EngineMetrics Metrics { get; }
    /// <summary>Tokens a sequence may reach (prompt and output).</summary>
    public int ContextTokens => _context;
    /// <summary>The state after the latest step.</summary>
    public EngineSnapshot Snapshot() => _snapshot;

    /// <summary>Raised on the engine thread after every step, with the state after it (tests check invariants).</summary>
    public event Action<EngineSnapshot>? StepCompleted;

    /// <summary>
    /// Queues a request and returns its stream at once. Bad requests (empty prompt, prompt over the context or the
    /// whole KV budget, invalid sampling settings) throw <see cref="EngineRequestException"/> here, never later.
    /// Cancelling <paramref name="cancel"/> ends the request and frees its blocks within a step.
    /// </summary>
    public RequestStream Submit(CompletionRequest request, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (_stop.IsCancellationRequested) throw new EngineRequestException("the engine is shutting down", "engine_stopped");
        Validate(request);
        if (Interlocked.Increment(ref _queued) > Options.MaxQueued)
        {
            Interlocked.Decrement(ref _queued);
            throw new EngineRequestException($"{Options.MaxQueued} requests are queued already; try again later", "queue_full");
        }
        long id = Interlocked.Increment(ref _nextId);
        var r = new EngineRequest(id, id, request, Tokenizer);
        Metrics.PromptTokens.Add(r.PromptLength);
        if (cancel.CanBeCanceled)
            r.Registration = cancel.Register(static state =>
            {
                var (engine, req) = ((InferenceEngine, EngineRequest))state!;
                engine.Cancel(req);
            }, (this, r));
        _inbox.Enqueue(r);
        _wake.Release();
        return r.Stream;
    }

    private void Cancel(EngineRequest r)
    {
        r.CancelRequested = true;
        _cancels.Enqueue(r);
        try { _wake.Release(); } catch (ObjectDisposedException) { }
    }

    private void Validate(CompletionRequest q)
    {
        int n = q.PromptTokens.Count;
        if (n == 0) throw new EngineRequestException("the prompt is empty", "invalid_value", "prompt");
        for (int i = 0; i < n; i++)
            if ((uint)q.PromptTokens[i] >= (uint)_model.Config.VocabSize)
                throw new EngineRequestException($"prompt token {i} is {q.PromptTokens[i]}, outside the vocabulary (0..{_model.Config.VocabSize - 1})",
                    "invalid_value", "prompt");
        if (q.MaxTokens <= 0) throw new EngineRequestException($"max_tokens must be at least 1 (got {q.MaxTokens})", "invalid_value", "max_tokens");
        if (n >= _context)
            throw new EngineRequestException($"the prompt has {n} tokens; this model's context is {_context} tokens, and at least one must be left " +
                                             "for the answer", "context_length_exceeded", "messages");
        int blocks = Pool.PeakBlocks(n + Options.DecodeReserveTokens);
        if (blocks > Pool.Blocks)
            throw new EngineRequestException($"the prompt has {n} tokens; with {Options.DecodeReserveTokens} tokens of room to answer it needs {blocks} " +
                                             $"KV blocks of {Options.Kv.Name}, and the whole budget ({Bytes.Format(Pool.BudgetBytes)}) is {Pool.Blocks}",
                "kv_budget_exceeded", "messages");
        ValidateSampler(q.Sampler);
        if (q.TopLogprobs is < 0 or > 20) throw new EngineRequestException($"top_logprobs must be in 0..20 (got {q.TopLogprobs})", "invalid_value", "top_logprobs");
        if (q.TopLogprobs > 0 && !q.Logprobs) throw new EngineRequestException("top_logprobs needs logprobs", "invalid_value", "top_logprobs");
    }

    /// <summary>Sampling settings a sampler can honour: finite, in range.</summary>
    public static void ValidateSampler(SamplerOptions s)
    {
        if (!float.IsFinite(s.Temperature) || s.Temperature < 0)
            throw new EngineRequestException($"temperature must be a finite number >= 0 (got {s.Temperature})", "invalid_value", "temperature");
        if (!(s.TopP > 0 && s.TopP <= 1)) throw new EngineRequestException($"top_p must be in (0, 1] (got {s.TopP})", "invalid_value", "top_p");
        if (!(s.MinP >= 0 && s.MinP <= 1)) throw new EngineRequestException($"min_p must be in [0, 1] (got {s.MinP})", "invalid_value", "min_p");
        if (s.TopK < 0) throw new EngineRequestException($"top_k must be >= 0 (got {s.TopK})", "invalid_value", "top_k");
        if (!(s.RepetitionPenalty > 0) || !float.IsFinite(s.RepetitionPenalty))
            throw new EngineRequestException($"repetition penalty must be a finite number > 0 (got {s.RepetitionPenalty})", "invalid_value", "repetition_penalty");
        if (!(s.PresencePenalty is >= -2 and <= 2))
            throw new EngineRequestException($"presence_penalty must be in [-2, 2] (got {s.PresencePenalty})", "invalid_value", "presence_penalty");
        if (!(s.FrequencyPenalty is >= -2 and <= 2))
            throw new EngineRequestException($"frequency_penalty must be in [-2, 2] (got {s.FrequencyPenalty})", "invalid_value", "frequency_penalty");
        if (s.RepetitionWindow < 0) throw new EngineRequestException($"repetition window must be >= 0 (got {s.RepetitionWindow})", "invalid_value", "repetition_window");
    }

    private void Loop()
    {
        while (true)
        {
            try
            {
                Drain();
                if (_stop.IsCancellationRequested) break;
                if (!_scheduler.HasWork)
                {
                    _wake.Wait(_stop.Token);
                    continue;
                }
                Step();
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                // A fault outside any one request (scheduling, a step handler): the requests in flight end with it,
                // the engine goes on with new ones.
                foreach (var r in _scheduler.All.ToList())
                {
                    _scheduler.Remove(r);
                    r.Fail(new InvalidOperationException($"the engine failed while request {r.Id} was in flight: {e.Message}", e));
                }
            }
        }
        // Shutting down: whatever is still queued or running ends as cancelled.
        Drain();
        foreach (var r in _scheduler.All.ToList()) Finish(r, FinishReason.Cancelled);
        while (_inbox.TryDequeue(out var r)) r.Finish(FinishReason.Cancelled);
    }

    /// <summary>New submissions in, cancelled requests out (their blocks back at once).</summary>
    private void Drain()
    {
        bool changed = false;
        while (_inbox.TryDequeue(out var r))
        {
            Interlocked.Decrement(ref _queued);
            if (r.CancelRequested) r.Finish(FinishReason.Cancelled);
            else _scheduler.Add(r);
            changed = true;
        }
        while (_cancels.TryDequeue(out var r))
            if (r.State != RequestState.Finished && (r.State == RequestState.Running || _scheduler.All.Contains(r)))
            {
                Finish(r, FinishReason.Cancelled);
                changed = true;
            }
        // Cancellations free blocks between steps: the snapshot shows it even when no step follows.
        if (changed) _snapshot = Snapshot(_steps);
    }

    private void Finish(EngineRequest r, FinishReason reason)
    {
        _scheduler.Remove(r);
        r.Finish(reason);
        Metrics.Requests.Add(1, new KeyValuePair<string, object?>("finish_reason", reason.ToString().ToLowerInvariant()));
    }

    private long _steps;

    private void Step()
    {
        var plan = _scheduler.Plan();
        if (plan.Count == 0)
        {
            // Nothing fits right now (every waiting request needs more blocks than are free); wait for a change.
            _wake.Wait(TimeSpan.FromMilliseconds(50), _stop.Token);
            return;
        }
        int n = 0, wanted = 0;
        if (_segments.Length < plan.Count) _segments = new BatchSegment[Math.Max(plan.Count, 64)];
        var segments = _segments.AsSpan(0, plan.Count);
        foreach (var item in plan) n += item.Count;
        if (_tokens.Length < n) _tokens = new int[Math.Max(n, _stepTokens)];
        int vocab = _model.Config.VocabSize;
        for (int i = 0, at = 0; i < plan.Count; i++)
        {
            var item = plan[i];
            item.Request.Tokens.CopyTo(item.Request.Computed, _tokens, at, item.Count);
            segments[i] = new BatchSegment(item.Request.Kv!, at, item.Count, item.Decode, item.Logits);
            if (item.Logits) wanted++;
            at += item.Count;
        }
        if (_logits.Length < wanted * vocab) _logits = new float[Math.Max(wanted, 8) * vocab];
        try
        {
            Forward(_tokens.AsSpan(0, n), segments, _logits);
        }
        catch (Exception e)
        {
            // The step's sequences may be half-appended: each of its requests fails; the rest go on.
            foreach (var item in plan)
            {
                _scheduler.Remove(item.Request);
                item.Request.Fail(new InvalidOperationException($"request {item.Request.Id} failed in a model step: {e.Message}", e));
            }
            Publish();
            return;
        }
        int row = 0;
        for (int i = 0; i < plan.Count; i++)
        {
            var r = plan[i].Request;
            if (!segments[i].Logits) continue;
            var logits = _logits.AsSpan(row++ * vocab, vocab);
            if (r.CancelRequested) continue; // drained next step
            try
            {
                int before = r.Generated;
                var reason = r.Accept(logits, Tokenizer, _context, Metrics);
                _generated += r.Generated - before;
                if (reason is { } done) Finish(r, done);
            }
            catch (Exception e)
            {
                _scheduler.Remove(r);
                r.Fail(e);
            }
        }
        Publish();
    }

    private void Forward(ReadOnlySpan<int> tokens, ReadOnlySpan<BatchSegment> segments, Span<float> logits)
    {
        if (_batched != null)
        {
            _batched.ForwardBatch(tokens, segments, logits);
            return;
        }
        // A model without a batched step: each sequence on its own.
        int vocab = _model.Config.VocabSize, row = 0;
        var scratch = new float[vocab];
        foreach (var s in segments)
        {
            _model.Forward(tokens.Slice(s.Start, s.Count), s.Kv, s.Logits ? logits.Slice(row++ * vocab, vocab) : scratch);
        }
    }

    private void Publish()
    {
        _steps++;
        var s = Snapshot(_steps);
        _snapshot = s;
        StepCompleted?.Invoke(s);
    }

    private EngineSnapshot Snapshot(long step)
    {
        return new EngineSnapshot(step, _scheduler.Waiting, _scheduler.Running, Pool.HeldBlocks, Pool.FreeBlocks,
            Pool.BytesInUse(_scheduler.Running), Pool.BytesHeld(_scheduler.Running), Pool.BudgetBytes, _scheduler.Preemptions, _scheduler.AdmittedPromptTokens,
            _scheduler.PrefixHitTokens, _generated)
        {
            KvContextTokens = _scheduler.RunningContextTokens,
            KvUnsharedBytes = Pool.BytesUnshared(_scheduler.Running),
            // Without the prefix cache full blocks are still registered as they fill, but no prompt ever looks
            // them up: nothing is cached for reuse.
            KvCachedBytes = Options.PrefixCache ? Pool.BytesCached : 0,
            Swap = _swap is { } w
                ? new SwapStats(w.ToHost, w.ToFile, w.ToHostBytes, w.ToFileBytes, w.FromHost, w.FromFile, w.FromHostBytes, w.FromFileBytes,
                    _scheduler.SwapRecomputes, w.HostBytes, w.FileBytes)
                : default,
        };
    }

    public void Dispose()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        _wake.Release();
        _thread.Join();
        if (_recent != null)
        {
            // Every sequence is released by now: what the prefix cache holds is final.
            try { Options.PromptCache!.Save(Pool.Cache, _recent); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Options.PromptCache!.SaveError = e;
            }
        }
        _swap?.Dispose();
        _prefixDisk?.Dispose();
        Metrics.Dispose();
        _wake.Dispose();
        _stop.Dispose();
    }
}
