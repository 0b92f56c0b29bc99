using Kvq.Cache;

namespace Kvq.Serving;

/// <summary>How an <see cref="InferenceEngine"/> runs: the cache format, its byte budget and the scheduler's limits.</summary>
public sealed record EngineOptions
{
    /// <summary>The format every sequence's KV is stored in (and its profile, sink tokens, block size).</summary>
    public required KvCacheConfig Kv { get; init; }

    /// <summary>Bytes the KV cache may hold, all sequences together (blocks, plus staging and sink copies per
    /// running sequence). The block pool is sized from it once; it is never exceeded.</summary>
    public required long KvBudgetBytes { get; init; }

    /// <summary>Sequences in flight at most (decoding or prefilling).</summary>
    public int MaxRunning { get; init; } = 64;

    /// <summary>Tokens per step, decode tokens and prompt chunks together (Sarathi's token budget); at most the
    /// model's batch size. Null: the model's batch size.</summary>
    public int? StepTokens { get; init; }

    /// <summary>Prompt chunk of a request under a token policy (a multiple of 16, at most the step's tokens): the policy
    /// runs after each chunk, so fixed chunks keep its choices, and the request's tokens, the same whatever else runs.
    /// A solo run that prefills in chunks of this size and decodes one token at a time gives the same tokens.</summary>
    public int PolicyChunkTokens { get; init; } = 64;

    /// <summary>Decode tokens whose blocks must be free beyond the prompt's before a request is admitted.</summary>
    public int DecodeReserveTokens { get; init; } = 32;

    /// <summary>Reuse cached blocks of earlier requests' prompts (a radix of full blocks, LRU eviction).</summary>
    public bool PrefixCache { get; init; } = true;

    /// <summary>What preemption does with a sequence's blocks: drop them and recompute later (full blocks stay in the
    /// prefix cache until evicted, so often little is recomputed), or copy them to host memory and back.</summary>
    public PreemptionMode Preemption { get; init; } = PreemptionMode.Recompute;

    /// <summary>Under <see cref="PreemptionMode.Swap"/>: host bytes that swapped-out sequences may hold together (null:
    /// no limit; 0: none, every swap goes to the file tier). What fits neither this nor <see cref="SwapFileBytes"/> is
    /// recomputed instead (<see cref="Cache.Storage.SwapSpace"/>).</summary>
    public long? SwapHostBytes { get; init; }

    /// <summary>Under <see cref="PreemptionMode.Swap"/>: bytes of files that swapped-out sequences may take in
    /// <see cref="SwapDirectory"/> once <see cref="SwapHostBytes"/> is full (0: no file tier).</summary>
    public long SwapFileBytes { get; init; }

    /// <summary>Where the swap file tier makes its folder (removed when the engine is disposed); null: the system's
    /// temporary folder.</summary>
    public string? SwapDirectory { get; init; }

    /// <summary>Bytes of files for cached prefix blocks that neither the pool nor <see cref="HostPrefixBytes"/> has room
    /// for (0: none): they are written to <see cref="PrefixDiskDirectory"/> and read back instead of recomputed
    /// (<see cref="Cache.Storage.PrefixFileTier"/>). Needs <see cref="PrefixCache"/>.</summary>
    public long PrefixDiskBytes { get; init; }

    /// <summary>Where the prefix disk tier makes its folder (removed when the engine is disposed); null: the system's
    /// temporary folder.</summary>
    public string? PrefixDiskDirectory { get; init; }

    /// <summary>Requests waiting at most; more are refused at once.</summary>
    public int MaxQueued { get; init; } = 4096;

    /// <summary>Bytes of host memory for cached prefix blocks the pool evicts (0: none): a later prompt with such a
    /// prefix copies them back instead of recomputing them (<see cref="Cache.Storage.HostPrefixTier"/>).</summary>
    public long HostPrefixBytes { get; init; }

    /// <summary>Where the prefix cache is kept across restarts (restored at start, saved at <see cref="InferenceEngine.Dispose"/>);
    /// null: it lives only as long as the engine. Ignored without <see cref="PrefixCache"/> or under a token policy.</summary>
    public PromptCacheStore? PromptCache { get; init; }

    /// <summary>Tokens a sequence may reach (prompt + output); null: the model's trained context.</summary>
    public int? ContextTokens { get; init; }
}

/// <summary>How a preempted sequence gets its KV back.</summary>
public enum PreemptionMode
{
    /// <summary>Its blocks are released; on return its tokens are run again (minus cached prefix blocks).</summary>
    Recompute,
    /// <summary>Its encoded blocks are copied to host memory (or, past <see cref="EngineOptions.SwapHostBytes"/>, to a
    /// file) and copied back on return (no model work); recomputed when neither has room.</summary>
    Swap,
}
