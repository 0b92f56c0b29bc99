using Kvq.Cache;

namespace Kvq.Serving;

/// <summary>
/// Iteration-level scheduling (Orca) with chunked prefill (Sarathi) over one block pool: each step first gives
/// every running decode its token, then continues prompt chunks, then admits waiting requests, all under a per-step
/// token budget. A request is admitted only when the blocks its whole prompt needs, plus a decode reserve, are free
/// beyond what running prompts still need. When a decode finds no block, the lowest-priority, latest-arrived running
/// request is preempted: its blocks go back (full ones stay cached for its return) and it waits to be recomputed.
/// Touched only by the engine thread.
/// <para>
/// Under a token policy the policy runs after every chunk, so its choices depend on where chunks end. To keep a
/// request's tokens independent of what else runs, its prompt goes in chunks of exactly
/// <see cref="EngineOptions.PolicyChunkTokens"/> (the last one shorter) and its generated tokens one per step, also
/// when recomputed after a preemption; and preemption always recomputes. A prompt prefix is the policy's state after
/// whole chunks (<see cref="PagedKvCache.SharePolicyPrefixes"/>), so a hit leaves the chunks where they were.
/// </para>
/// </summary>
internal sealed class Scheduler(KvPool pool, EngineOptions options, int stepTokens, EngineMetrics metrics)
{
    /// <summary>Prompt chunks other than a prompt's last are multiples of this many tokens, so every prompt token
    /// meets the same matrix-matrix kernel path however the prompt was cut (the kernels work in groups of 4 rows).</summary>
    public const int ChunkAlignment = 16;

    private readonly SortedSet<EngineRequest> _waiting = new(RankOrder.Instance);
    private readonly List<EngineRequest> _running = [];
    private readonly List<StepItem> _plan = [];
    private readonly List<EngineRequest> _ranked = [];
    private int _plannedBlocks;

    public int Waiting => _waiting.Count;
    public int Running => _running.Count;
    public long Preemptions { get; private set; }
    /// <summary>Sequences swapped out (to host memory or a file: <see cref="Swap"/> says which).</summary>
    public long SwappedOut { get; private set; }
    /// <summary>Under swap preemption, sequences recomputed after all: preempted with no room in the swap tiers (or a
    /// failed write, or a sequence that cannot be swapped), or swapped to a file that could not be read back.</summary>
    public long SwapRecomputes { get; private set; }
    /// <summary>Where swapped-out sequences go (null: preemption recomputes).</summary>
    public Cache.Storage.SwapSpace? Swap { get; init; }
    /// <summary>Prompt tokens of requests admitted (first admission only) and how many of them the prefix cache held.</summary>
    public long AdmittedPromptTokens { get; private set; }
    public long PrefixHitTokens { get; private set; }
    public bool HasWork => _waiting.Count > 0 || _running.Count > 0;
    public IEnumerable<EngineRequest> All => _running.Concat(_waiting);

    public void Add(EngineRequest r) => _waiting.Add(r);

    /// <summary>Tokens the running requests have in their KV (prompt and generated tokens appended so far).</summary>
    public long RunningContextTokens
    {
        get
        {
            long n = 0;
            foreach (var r in _running) n += r.Kv?.Length ?? 0;
            return n;
        }
    }

    /// <summary>Where released requests' tokens are recorded for <see cref="PromptCacheStore"/> (null: not kept).</summary>
    public RecentPrefixes? Recent { get; init; }

    /// <summary>Takes a request out (cancelled or failed): its blocks go back at once.</summary>
    public void Remove(EngineRequest r)
    {
        if (r.State == RequestState.Waiting)
        {
            _waiting.Remove(r);
            if (r.Swapped is { } ticket) Swap!.Drop(ticket);
            r.Swapped = null;
        }
        else if (r.State == RequestState.Running) Release(r);
    }

    /// <summary>A finished request's blocks go back (full registered ones stay cached for prefix reuse).</summary>
    public void Release(EngineRequest r)
    {
        if (r.Kv is { } kv && Recent != null && kv.Length <= r.Tokens.Count)
            Recent.Add(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(r.Tokens)[..kv.Length]);
        r.Kv?.Dispose();
        r.Kv = null;
        _running.Remove(r);
    }

    /// <summary>The next step's work, decode items first. Preempts and admits as needed.</summary>
    public IReadOnlyList<StepItem> Plan()
    {
        _plan.Clear();
        _plannedBlocks = 0;
        int budget = stepTokens;
        Rank();
        // 1. Decodes (and recomputation of generated tokens), highest rank first.
        foreach (var r in _ranked)
            if (budget > 0 && r.State == RequestState.Running && !r.InPrompt && TryPlan(r, DecodeChunk(budget, r), decode: true))
                budget -= _plan[^1].Count;
        // 2. Prompts already under way.
        foreach (var r in _ranked)
            if (budget > 0 && r.State == RequestState.Running && r.InPrompt && PromptChunk(r, budget) is > 0 and var k && TryPlan(r, k, decode: false))
                budget -= k;
        // 3. Admissions, in rank order; the head of the queue waits for room rather than being overtaken.
        while (budget > 0 && _running.Count < pool.MaxRunning && _waiting.Count > 0)
        {
            var r = _waiting.Min!;
            if (!TryAdmit(r))
            {
                // Nothing runs and it still does not fit: it has outgrown the whole budget (a preempted request that
                // grew); waiting would never end.
                if (_running.Count == 0)
                {
                    _waiting.Remove(r);
                    OutOfBudget?.Invoke(r);
                    continue;
                }
                break;
            }
            int k = r.InPrompt ? PromptChunk(r, budget) : DecodeChunk(budget, r);
            if (k > 0 && TryPlan(r, k, decode: !r.InPrompt)) budget -= k;
            else break;
        }
        // Decode items first (the model runs their rows through the matrix-vector kernels together).
        _plan.Sort(static (a, b) => (b.Decode ? 1 : 0) - (a.Decode ? 1 : 0));
        return _plan;
    }

    private void Rank()
    {
        _ranked.Clear();
        _ranked.AddRange(_running);
        _ranked.Sort(RankOrder.Instance);
    }

    /// <summary>The next prompt chunk within <paramref name="budget"/>: the rest of the prompt, or an aligned part.
    /// Under a token policy: the next whole policy chunk, or nothing this step.</summary>
    private int PromptChunk(EngineRequest r, int budget)
    {
        int rest = r.PromptLength - r.Computed;
        if (pool.HasPolicy)
        {
            int chunk = Math.Min(rest, options.PolicyChunkTokens);
            return chunk <= budget ? chunk : 0;
        }
        return rest <= budget ? rest : budget / ChunkAlignment * ChunkAlignment;
    }

    /// <summary>Generated tokens to run this step: one when decoding; when recomputing after a preemption, as many as
    /// fit (one at a time under a token policy, as they first ran).</summary>
    private int DecodeChunk(int budget, EngineRequest r) => pool.HasPolicy ? 1 : Math.Min(budget, r.Pending);

    /// <summary>Blocks that can still be promised this step: free ones, less the blocks already planned.</summary>
    private int Available => pool.FreeBlocks - _plannedBlocks;

    /// <summary>Plans <paramref name="count"/> tokens of a running request, preempting lower-ranked requests for
    /// blocks. False when the request itself had to go (preempted, or finished because nothing else can give way).</summary>
    private bool TryPlan(EngineRequest r, int count, bool decode)
    {
        int need = r.Kv!.BlocksNeededToAppend(count);
        while (need > Available)
        {
            var victim = LowestRanked();
            if (victim == r && _running.Count == 1)
            {
                // Alone and still out of blocks: the sequence has outgrown the whole budget.
                OutOfBudget?.Invoke(r);
                return false;
            }
            Preempt(victim);
            if (victim == r) return false;
        }
        _plan.Add(new StepItem(r, count, decode, need));
        _plannedBlocks += need;
        return true;
    }

    /// <summary>Called when a lone request can grow no further within the budget (the engine ends it: length).</summary>
    public Action<EngineRequest>? OutOfBudget { get; set; }

    private EngineRequest LowestRanked()
    {
        EngineRequest worst = _running[0];
        foreach (var r in _running)
            if (RankOrder.Instance.Compare(r, worst) > 0) worst = r;
        return worst;
    }

    private void Preempt(EngineRequest victim)
    {
        int at = _plan.FindIndex(i => i.Request == victim);
        if (at >= 0)
        {
            _plannedBlocks -= _plan[at].Blocks;
            _plan.RemoveAt(at);
        }
        // Swap is null under a token policy (InferenceEngine.SwapSpaceFor): such a victim is recomputed.
        if (Swap != null)
        {
            // Its blocks go back either way (full ones stay cached); with no room in the swap tiers (checked before any
            // copy is made) it is recomputed.
            victim.Swapped = SwapOut(victim.Kv!);
            if (victim.Swapped != null)
            {
                victim.Kv!.Dispose();
                victim.Kv = null;
                SwappedOut++;
            }
            else SwapRecomputes++;
        }
        Release(victim);
        victim.State = RequestState.Waiting;
        victim.Preemptions++;
        _waiting.Add(victim);
        Preemptions++;
        metrics.Preemptions.Add(1);
    }

    /// <summary>The sequence in a swap tier, or null where no tier has room or it cannot be swapped (sliding-window
    /// rings): it is recomputed instead.</summary>
    private Cache.Storage.SwapTicket? SwapOut(PagedKvSequence kv)
    {
        try { return Swap!.TryPut(kv); }
        catch (KvSpecException) { return null; }
    }

    /// <summary>Starts a waiting request if its prompt (what the prefix cache lacks) and the decode reserve fit in
    /// what is free beyond the blocks running prompts still need.</summary>
    private bool TryAdmit(EngineRequest r)
    {
        int promised = 0;
        foreach (var other in _running)
            if (other.InPrompt)
                promised += other.Kv!.BlocksNeededToAppend(other.PromptLength - other.Computed, pool.SlotCap(other.PromptLength + options.DecodeReserveTokens));
        // Blocks of prompt chunks planned this step are part of `promised` already.
        foreach (var item in _plan)
            if (!item.Decode) promised -= item.Blocks;
        PagedKvSequence? kv = null;
        if (r.Swapped is { } ticket)
        {
            // Swapped out: its blocks come back as they were (no prefix lookup, no model work). A file that cannot be
            // read back leaves it to be recomputed from its tokens, below. Room is counted as for a recompute: for every
            // token it has (the ones still to run too: its last sampled token, or generated tokens not yet recomputed
            // if it fell back to recompute before) plus the reserve. Counting only the swapped tokens let it in without
            // a block for its next token, so its own step preempted it again: out, in and out in one step.
            if (pool.BlocksFor(r.Tokens.Count + options.DecodeReserveTokens) > Available - promised) return false;
            r.Swapped = null;
            if (Swap!.TryTake(ticket) is { } swapped) kv = PagedKvSequence.SwapIn(pool.Cache, swapped);
            else SwapRecomputes++;
        }
        if (kv == null)
        {
            var tokens = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(r.Tokens);
            // Under a policy a kept prefix state covers whole prompt chunks; a recomputed request's generated tokens
            // ran one per step, so only its prompt may come from such a state.
            if (pool.HasPolicy) tokens = tokens[..r.PromptLength];
            kv = pool.Cache.CreateSequence(options.PrefixCache ? tokens : default);
            int total = r.Tokens.Count + options.DecodeReserveTokens;
            int need = kv.BlocksNeededToAppend(total - kv.Length, pool.SlotCap(total));
            if (need > Available - promised)
            {
                kv.Dispose();
                return false;
            }
        }
        _waiting.Remove(r);
        r.Kv = kv;
        r.State = RequestState.Running;
        _running.Add(r);
        if (r.Preemptions == 0)
        {
            r.CachedPromptTokens = Math.Min(kv.Length, r.PromptLength);
            metrics.PrefixHitTokens.Add(r.CachedPromptTokens);
            AdmittedPromptTokens += r.PromptLength;
            PrefixHitTokens += r.CachedPromptTokens;
        }
        return true;
    }

    /// <summary>Higher priority first, then earlier arrival.</summary>
    private sealed class RankOrder : IComparer<EngineRequest>
    {
        public static readonly RankOrder Instance = new();

        public int Compare(EngineRequest? a, EngineRequest? b)
        {
            if (ReferenceEquals(a, b)) return 0;
            int c = b!.Priority.CompareTo(a!.Priority);
            if (c != 0) return c;
            c = a.Arrival.CompareTo(b.Arrival);
            return c != 0 ? c : a.Id.CompareTo(b.Id);
        }
    }
}
