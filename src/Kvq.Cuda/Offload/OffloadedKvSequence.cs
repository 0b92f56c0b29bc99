using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Offload;
using Kvq.Cuda.Model;
using Kvq.Cuda.Native;
using Kvq.Tensors;

namespace Kvq.Cuda.Offload;

/// <summary>
/// A KVQuant KV sequence on the device whose older blocks live in pinned host memory (issue 20, the GPU tiers). Every
/// block has a home (<see cref="BlockHomes"/>): the device (the sink, the recent part, anything not moved) or the host
/// tier (<see cref="MoveToHost"/>, <see cref="HostTier"/>). Per decode step, layer and KV head, the per-block key
/// summaries kept on the device (<see cref="KeySummaries"/>: post-RoPE min/max per channel, one box per 128-token block,
/// f16) are scored there (<see cref="BlockScorer"/>, the CPU tier's estimate), the blocks are chosen on the host by the
/// CPU tier's own rule (<see cref="BlockChoice"/>, <see cref="BlockSelector.Rank"/>: the same code), the chosen host
/// blocks missing from the device are copied into the (layer, KV head)'s working slots (<see cref="WorkingSlots"/>) on a
/// second stream (<see cref="CopyStream"/>), and the existing paged decode kernel attends over the chosen blocks through
/// a block list per KV head (<see cref="HeadBlockLists"/>, <see cref="OffloadAttention"/>).
/// Speculation (InfiniGen-style, <see cref="Speculation"/>): the model hands layer l+1's query computed from layer l's
/// input (<see cref="ISpeculativeKvSequence"/>); its choice is copied in while layer l computes, and what it missed is
/// fetched on demand when layer l+1's real query has chosen. A `full` budget reads every block, in order, through the
/// same kernel as <see cref="CudaKvSequence"/> with the same split: the same bits as on-device attention.
/// Decode steps only once blocks are on the host (a prefill chunk before that attends as <see cref="CudaKvSequence"/>).
/// </summary>
public sealed class OffloadedKvSequence : IKvSequence, IKvMemoryReport, IDeviceKvSequence, ISpeculativeKvSequence, IDisposable
{
    private const int BT = CudaKvCache.BlockTokens;
    private readonly CudaKvCache _pool;        // device slots: home blocks (rented per block) and the working slots
    private readonly CudaContext _ctx;
    private readonly KvShape _shape;
    private readonly KvOffloadBudget _budget;
    private readonly OffloadSizes _sizes;
    private readonly HostSpill? _spill;
    private readonly int[] _count;             // tokens appended per layer
    private readonly OffloadStats _stats = new();
    private readonly BlockHomes _homes;
    private readonly HostTier _host;
    private readonly KeySummaries _summaries;
    private readonly BlockScorer _scorer;
    private readonly Speculation _speculation;
    private readonly CopyStream _copies;
    private readonly WorkingSlots _slots;
    private readonly BlockChoice _choice;
    private readonly HeadBlockLists _lists;
    private readonly OffloadAttention _attention;
    private bool _disposed;

    public int Length { get; private set; }
    public long Capacity { get; }
    public KvCacheConfig Config => _pool.Config;
    public KvOffloadBudget Budget => _budget;
    public OffloadSizes Sizes => _sizes;
    /// <summary>Blocks whose home is the host tier now.</summary>
    public int HostBlocksUsed => _homes.HostUsed;
    /// <summary>When blocks move to the host on their own (after each decode step); null: only through <see cref="MoveToHost"/>.</summary>
    public HostSpill? Spill => _spill;

    internal OffloadedKvSequence(CudaContext ctx, ModelKernels kernels, KvShape shape, (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[] codecs,
        int sink, int maxTokens, KvOffloadBudget budget, OffloadSizes sizes, HostSpill? spill = null)
    {
        ArgumentNullException.ThrowIfNull(budget);
        ArgumentNullException.ThrowIfNull(sizes);
        if (maxTokens <= 0) throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "an offloaded sequence holds at least one token");
        if (sizes.DeviceBlocks < 1 || sizes.WorkingBlocks < 1 || sizes.HostBlocks < 0)
            throw new ArgumentOutOfRangeException(nameof(sizes), sizes, "an offloaded sequence needs device-home blocks, working slots and a non-negative host tier");
        if (sink > 8) throw new ArgumentOutOfRangeException(nameof(sink), sink, "at most 8 sink tokens (the decode kernels' limit)");
        _ctx = ctx;
        _shape = shape;
        _budget = budget;
        _sizes = sizes;
        _spill = spill;
        var rope = new RopeParams(shape.HeadDim, shape.Rope.RopeDims, shape.Rope.Style == RopeStyle.Neox, shape.Rope.Scale,
            MathF.Pow(shape.Rope.Base, -2.0f / shape.Rope.RopeDims));
        int maxBlocks = (maxTokens + BT - 1) / BT;
        Capacity = (long)maxBlocks * BT;
        _count = new int[shape.Layers];
        ctx.MakeCurrent();
        _copies = new CopyStream(ctx, kernels, shape.Layers, _stats);
        try
        {
            _pool = new CudaKvCache(ctx, kernels, shape, new KvCacheConfig(codecs[0].Keys[0].Spec.Name, codecs[0].Keys[0].Spec.Name, 32, sink),
                (long)(sizes.DeviceBlocks + sizes.WorkingBlocks) * BT, codecs, null);
            _host = new HostTier(ctx, _pool, shape, sizes.HostBlocks);
            _stats.BlockBytes = _host.BlockBytes;
            _homes = new BlockHomes(ctx, _pool, maxBlocks, sizes);
            _slots = new WorkingSlots(_pool, _homes, _host, shape.Layers, shape.KvHeads, sizes.WorkingBlocks, maxBlocks);
            _summaries = new KeySummaries(ctx, kernels, shape, rope, maxBlocks);
            _scorer = new BlockScorer(ctx, kernels, shape, budget, _summaries);
            _speculation = new Speculation(new BlockScorer(ctx, kernels, shape, budget, _summaries), budget, shape.Layers);
            _choice = new BlockChoice(budget, shape.KvHeads, shape.GroupSize, maxBlocks, _slots, _host.Arrays, _copies, _stats);
            _lists = new HeadBlockLists(ctx, shape.KvHeads, maxBlocks);
            _attention = new OffloadAttention(ctx, kernels, shape, rope, sink, Capacity);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Device bytes: the slot pool (home and working slots), summaries, tables and scratch.</summary>
    public long DeviceBytes => (_pool?.DeviceBytes ?? 0) + (_summaries?.Bytes ?? 0) + (_attention?.DeviceBytes ?? 0) + (_homes?.Table.Bytes ?? 0)
        + (_lists?.DeviceBytes ?? 0) + (_scorer?.DeviceBytes ?? 0) + (_speculation?.Scorer.DeviceBytes ?? 0);

    /// <summary>Device bytes of the per-block key summaries alone.</summary>
    public long SummaryBytes => _summaries.Bytes;

    /// <summary>Pinned host bytes of the host tier (allocated for <see cref="OffloadSizes.HostBlocks"/>).</summary>
    public long HostBytes => _host.Bytes;

    /// <summary>Bytes of one block (every layer and KV head) in either tier.</summary>
    public long BlockBytes => _stats.BlockBytes * _shape.Layers * _shape.KvHeads;

    /// <summary>Counters since creation (copy times of the last steps read once they completed).</summary>
    public OffloadStats Stats
    {
        get
        {
            _ctx.MakeCurrent();
            _copies.Settle();
            return _stats.Clone();
        }
    }

    /// <summary>What the tokens held take in their format, both tiers together (codes split evenly between keys and
    /// values as <see cref="CudaKvSequence"/> reports them), the summaries of their blocks as key indices, and the f16
    /// sink copies as staging. <see cref="DeviceBytes"/> and <see cref="HostBytes"/> are what each tier allocated.</summary>
    public KvMemory Memory()
    {
        long held = _pool.BytesPerToken * Length;
        long summaries = (long)(Length + BT - 1) / BT * _shape.Layers * _shape.KvHeads * 2 * _shape.HeadDim * 2;
        long sink = 2L * _shape.Layers * _shape.KvHeads * Math.Min(Config.SinkTokens, Length) * _shape.HeadDim * 2;
        return new KvMemory(KvBytes.CodesOnly(held / 2) with { Indices = summaries }, KvBytes.CodesOnly(held - held / 2), sink, Length,
            _shape.Layers * _shape.KvDim);
    }

    public void BeginChunk(ReadOnlySpan<int> tokens) { }

    void IDeviceKvSequence.AppendDevice(int layer, ulong k, ulong v, int n)
    {
        int slot = _count[layer];
        if (slot + n > Capacity)
            throw new InvalidOperationException($"offloaded KV sequence full: {slot} + {n} tokens exceed its capacity of {Capacity}");
        _homes.Hold(slot + n);
        _attention.Append(layer, _pool.Nuq![layer], k, v, n, slot, _homes.Table.Pointer);
        _summaries.Add(layer, k, n, slot);
        _count[layer] = slot + n;
    }

    /// <summary>
    /// Moves blocks [<paramref name="from"/>, <paramref name="to"/>) (whole, committed, device-home) to the host tier, every
    /// layer and KV head, and gives their device slots back: the device keeps their summaries only.
    /// </summary>
    public void MoveToHost(int from, int to)
    {
        _homes.CheckMove(from, to, Length);
        _ctx.MakeCurrent();
        // The device may still be behind (a step's copies read the demand job lists rewritten below): wait for it.
        _ctx.Synchronize();
        _copies.Synchronize();
        int heads = _shape.KvHeads;
        for (int l = 0; l < _shape.Layers; l++)
        {
            int jobs = (to - from) * heads * _host.Arrays;
            var span = _copies.Jobs(l, prefetch: false, jobs);
            int j = 0;
            for (int b = from; b < to; b++)
                for (int a = 0; a < _host.Arrays; a++)
                    for (int h = 0; h < heads; h++)
                        span[j++] = _host.ToHost(l, a, h, _homes.DeviceHome(b), _homes.HostUsed + (b - from));
            _copies.RunNow(l, jobs);   // waited for: the job list is rewritten next and the slots given back after
        }
        _homes.Moved(from, to);
    }

    void ISpeculativeKvSequence.Speculate(int layer, ulong q)
    {
        if (!_sizes.Speculate || _homes.HostUsed == 0 || layer <= 0 || layer >= _shape.Layers) return;
        _speculation.Predict(layer, q, _count[layer] + 1);   // this step's token is not appended to the layer yet
    }

    bool ISpeculativeKvSequence.Speculates => _sizes.Speculate && _homes.HostUsed > 0;

    void IDeviceKvSequence.AttendDevice(int layer, ulong q, int n, ulong output)
    {
        int count = _count[layer];
        var nuq = _pool.Nuq![layer];
        if (n > 1)
        {
            if (_homes.HostUsed > 0) throw new NotSupportedException("a prefill chunk over an offloaded sequence with blocks on the host (decode steps only, one token each)");
            _attention.Prefill(layer, nuq, _pool.MaxTokens, q, n, count, output, _homes.Table.Pointer);
            return;
        }
        var plan = BlockSelector.Plan(_budget, layer, _shape.Layers, BT, count, count);
        if (!plan.All)
        {
            _scorer.Score(layer, q, plan.Visible);
            _scorer.CopyDown(plan.Visible);
        }
        var spec = _speculation.Plan;
        _speculation.CopyDown(spec);
        Driver.Check(Driver.cuStreamSynchronize(IntPtr.Zero), "cuStreamSynchronize");
        _copies.ReadTimes(layer, prefetch: false);   // the last step's demand copies (waited for); this step's prefetch may still run

        // This layer's choice, its misses fetched on the copy stream, the block lists.
        int jobs = _choice.Choose(layer, plan, _scorer, count, prefetch: false);
        if (jobs > 0) _copies.Start(layer, jobs, prefetch: false);
        var (slots, lists, longest) = _lists.Upload(layer, count, _choice, _slots);
        _copies.WaitFor(layer);
        _attention.Decode(layer, nuq, q, output, slots, lists, longest);

        // Speculation for the next layer: its predicted blocks start copying while this layer computes.
        var (sl, specCount) = _speculation.Take();
        if (sl >= 0)
        {
            int pj = _choice.Choose(sl, spec, _speculation.Scorer, specCount, prefetch: true);
            if (pj > 0) _copies.Start(sl, pj, prefetch: true);
        }
    }

    public void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n) =>
        throw new NotSupportedException("an offloaded sequence takes keys and values through the CUDA model (device addresses)");

    public void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par) =>
        throw new NotSupportedException("an offloaded sequence attends through the CUDA model (device addresses)");

    public void Commit(int n)
    {
        Length += n;
        for (int l = 0; l < _count.Length; l++)
            if (_count[l] != Length)
                throw new InvalidOperationException($"commit of {n} tokens: layer {l} holds {_count[l]} tokens, expected {Length}");
        if (n == 1 && _spill != null)   // a decode step (a prefill chunk attends over device-home blocks only)
            foreach (var (from, to) in _spill.Runs(Length, b => _homes.DeviceHome(b) >= 0))
                MoveToHost(from, to);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try { _ctx.MakeCurrent(); _ctx.Synchronize(); _copies?.Synchronize(); } catch (CudaException) { /* freeing anyway */ }
        _copies?.Dispose();
        _attention?.Dispose();
        _lists?.Dispose();
        _scorer?.Dispose();
        _speculation?.Scorer.Dispose();
        _summaries?.Dispose();
        _homes?.Dispose();
        _host?.Dispose();
        _pool?.Dispose();
    }
}
