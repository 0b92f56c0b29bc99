using System.Diagnostics;
using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cache.Offload;
using Kvq.Cuda.Model;
using Kvq.Cuda.Native;
using Kvq.Tensors;

namespace Kvq.Cuda.Offload;

/// <summary>How an <see cref="OffloadedKvSequence"/>'s tiers are sized, in 128-token blocks (each block holds every layer
/// and KV head).</summary>
/// <param name="DeviceBlocks">Device-home blocks: the recent part of the sequence and what has not moved to the host;
/// new tokens are appended here.</param>
/// <param name="WorkingBlocks">Device slots per (layer, KV head) for host blocks that attention reads (the working set:
/// at least the budget's blocks, more to keep what the next steps will read again and what speculation brings in).</param>
/// <param name="HostBlocks">Blocks the pinned host tier holds.</param>
/// <param name="Speculate">Predict layer l+1's blocks from layer l's input (its query through layer l+1's Wq) and start
/// their copies while layer l computes.</param>
public sealed record OffloadSizes(int DeviceBlocks, int WorkingBlocks, int HostBlocks, bool Speculate = true);

/// <summary>
/// A KVQuant KV sequence on the device whose older blocks live in pinned host memory (issue 20, the GPU tiers). Every
/// block has a home: the device (the sink, the recent part, anything not moved) or the host tier
/// (<see cref="MoveToHost"/>). Per decode step, layer and KV head, the per-block key summaries kept on the device
/// (post-RoPE min/max per channel, one box per 128-token block, f16) are scored there (model.cu offload_score, the CPU
/// tier's estimate), the blocks are chosen on the host by the CPU tier's own rule (<see cref="BlockSelector.Rank"/>, the
/// same code), the chosen host blocks missing from the device are copied into the (layer, KV head)'s working slots on a
/// second stream (offload_copy, zero-copy reads of the pinned memory), and the existing paged decode kernel attends over
/// the chosen blocks through a block list per KV head (model.cu HeadBlocks: physical slot and position per block).
/// Speculation (InfiniGen-style): the model hands layer l+1's query computed from layer l's input
/// (<see cref="ISpeculativeKvSequence"/>); its choice is copied in while layer l computes, and what it missed is fetched
/// on demand when layer l+1's real query has chosen. A `full` budget reads every block, in order, through the same
/// kernel as <see cref="CudaKvSequence"/> with the same split: the same bits as on-device attention.
/// Decode steps only once blocks are on the host (a prefill chunk before that attends as <see cref="CudaKvSequence"/>).
/// </summary>
public sealed class OffloadedKvSequence : IKvSequence, IDeviceKvSequence, ISpeculativeKvSequence, IDisposable
{
    private const int BT = CudaKvCache.BlockTokens;
    private readonly CudaKvCache _pool;        // device slots: home blocks (rented per block) and the working slots
    private readonly CudaContext _ctx;
    private readonly ModelKernels _kernels;
    private readonly KvShape _shape;
    private readonly RopeParams _rope;
    private readonly KvOffloadBudget _budget;
    private readonly OffloadSizes _sizes;
    private readonly int _maxBlocks, _sink;
    private readonly int[] _home;              // logical block -> device-home physical block, -1 when not home on the device
    private readonly int[] _hostIndex;         // logical block -> host slot, -1 when not on the host
    private readonly int[] _work;              // working slot -> physical block (the same for every layer and head)
    private readonly int _arraysMoved;         // the nuq arrays a block copy moves (NuqDeviceLayer.PagedArrays order)
    private readonly int[] _arrayIndex, _arraySlotBytes;
    private readonly PinnedHostBuffer[][] _host;   // [layer][moved array]: [KV head][host block][128 x slot bytes]
    private readonly WorkingSet[] _ws;         // [layer x KV heads + head]
    private readonly DeviceBuffer _homeBt, _table, _part, _sel, _estDev, _estSpecDev;
    private readonly DeviceBuffer[] _sum, _sinkK, _sinkV;
    private readonly PinnedHostBuffer _est, _estSpec;
    private readonly PinnedHostBuffer?[] _demandJobs, _prefetchJobs;   // per layer, grown on demand
    private readonly CudaStream _copy;
    private readonly CudaEvent[] _ready, _d0, _d1, _p0, _p1;
    private readonly bool[] _copiesPending, _dTimed, _pTimed;
    private readonly int[] _count;
    private readonly int[][] _chosen, _order;
    private readonly float[][] _scores;
    private readonly int[] _nChosen, _selHost;
    private readonly List<CopyJob>[] _headJobs;
    private readonly long[] _hits, _pfUsed, _hostChosen;
    private int _held, _hostUsed;
    private int _specLayer = -1, _specCount;
    private bool _disposed;

    public int Length { get; private set; }
    public long Capacity { get; }
    public KvCacheConfig Config => _pool.Config;
    public KvOffloadBudget Budget => _budget;
    public OffloadSizes Sizes => _sizes;
    /// <summary>Blocks whose home is the host tier now.</summary>
    public int HostBlocksUsed => _hostUsed;
    private OffloadStats _stats = new();

    internal OffloadedKvSequence(CudaContext ctx, ModelKernels kernels, KvShape shape, (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[] codecs,
        int sink, int maxTokens, KvOffloadBudget budget, OffloadSizes sizes)
    {
        ArgumentNullException.ThrowIfNull(budget);
        ArgumentNullException.ThrowIfNull(sizes);
        if (maxTokens <= 0) throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "an offloaded sequence holds at least one token");
        if (sizes.DeviceBlocks < 1 || sizes.WorkingBlocks < 1 || sizes.HostBlocks < 0)
            throw new ArgumentOutOfRangeException(nameof(sizes), sizes, "an offloaded sequence needs device-home blocks, working slots and a non-negative host tier");
        if (sink > 8) throw new ArgumentOutOfRangeException(nameof(sink), sink, "at most 8 sink tokens (the decode kernels' limit)");
        _ctx = ctx;
        _kernels = kernels;
        _shape = shape;
        _budget = budget;
        _sizes = sizes;
        _sink = sink;
        _rope = new RopeParams(shape.HeadDim, shape.Rope.RopeDims, shape.Rope.Style == RopeStyle.Neox, shape.Rope.Scale,
            MathF.Pow(shape.Rope.Base, -2.0f / shape.Rope.RopeDims));
        _maxBlocks = (maxTokens + BT - 1) / BT;
        Capacity = (long)_maxBlocks * BT;
        int layers = shape.Layers, heads = shape.KvHeads, g = shape.GroupSize;
        _home = new int[_maxBlocks];
        _hostIndex = new int[_maxBlocks];
        Array.Fill(_home, -1);
        Array.Fill(_hostIndex, -1);
        _count = new int[layers];
        _ready = new CudaEvent[layers];
        _d0 = new CudaEvent[layers];
        _d1 = new CudaEvent[layers];
        _p0 = new CudaEvent[layers];
        _p1 = new CudaEvent[layers];
        _copiesPending = new bool[layers];
        _dTimed = new bool[layers];
        _pTimed = new bool[layers];
        _demandJobs = new PinnedHostBuffer?[layers];
        _prefetchJobs = new PinnedHostBuffer?[layers];
        _sum = new DeviceBuffer[layers];
        _sinkK = new DeviceBuffer[layers];
        _sinkV = new DeviceBuffer[layers];
        _host = new PinnedHostBuffer[layers][];
        _ws = new WorkingSet[layers * heads];
        _chosen = new int[heads][];
        _order = new int[heads][];
        _scores = new float[heads][];
        _nChosen = new int[heads];
        _headJobs = new List<CopyJob>[heads];
        _hits = new long[heads];
        _pfUsed = new long[heads];
        _hostChosen = new long[heads];
        _selHost = new int[heads * _maxBlocks * 2 + heads];
        for (int h = 0; h < heads; h++)
        {
            _chosen[h] = new int[_maxBlocks];
            _order[h] = new int[_maxBlocks];
            _scores[h] = new float[_maxBlocks];
            _headJobs[h] = new List<CopyJob>();
        }
        ctx.MakeCurrent();
        _copy = new CudaStream();
        _pool = new CudaKvCache(ctx, kernels, shape, new KvCacheConfig(codecs[0].Keys[0].Spec.Name, codecs[0].Keys[0].Spec.Name, 32, sink),
            (long)(sizes.DeviceBlocks + sizes.WorkingBlocks) * BT, codecs, null);
        try
        {
            var nuq0 = _pool.Nuq![0];
            var moved = new List<int>();
            for (int a = 0; a < nuq0.PagedArrays.Length; a++)
            {
                // Slot arrays of a layout without outliers are allocated (one byte or two per slot) but never read.
                bool unused = (a is 1 or 2 && nuq0.KeySlots == 0) || (a is 5 or 6 && nuq0.ValueOutliersPerTail == 0);
                if (!unused) moved.Add(a);
            }
            _arrayIndex = moved.ToArray();
            _arraysMoved = _arrayIndex.Length;
            _arraySlotBytes = _arrayIndex.Select(a => nuq0.PagedArrays[a].SlotBytes).ToArray();
            _stats.BlockBytes = BT * _arraySlotBytes.Sum();
            _work = new int[sizes.WorkingBlocks];
            for (int i = 0; i < _work.Length; i++) _work[i] = _pool.Rent();
            _homeBt = ctx.Allocate(_maxBlocks * 4L);
            long rows = 128 + Capacity / 128, rowBytes = shape.Rope.RopeDims / 2 * 8L;
            _table = ctx.Allocate(rows * rowBytes);
            kernels.RopeTable(rows, _rope, _table);
            _part = ctx.Allocate((long)CudaKvSequence.MaxSplitStates * shape.Heads * (shape.HeadDim + 2) * 4);
            _sel = ctx.Allocate(_selHost.Length * 4L);
            _estDev = ctx.Allocate((long)heads * _maxBlocks * g * 4);
            _estSpecDev = ctx.Allocate((long)heads * _maxBlocks * g * 4);
            _est = new PinnedHostBuffer(ctx, _estDev.Bytes, "block estimates");
            _estSpec = new PinnedHostBuffer(ctx, _estSpecDev.Bytes, "block estimates");
            for (int l = 0; l < layers; l++)
            {
                _sum[l] = ctx.Allocate((long)heads * _maxBlocks * 2 * shape.HeadDim * 2);
                _sum[l].Fill(0);
                _sinkK[l] = ctx.Allocate((long)heads * Math.Max(sink, 1) * shape.HeadDim * 2);
                _sinkV[l] = ctx.Allocate((long)heads * Math.Max(sink, 1) * shape.HeadDim * 2);
                _host[l] = new PinnedHostBuffer[_arraysMoved];
                if (sizes.HostBlocks > 0)
                    for (int a = 0; a < _arraysMoved; a++)
                        _host[l][a] = new PinnedHostBuffer(ctx, (long)heads * sizes.HostBlocks * BT * _arraySlotBytes[a], $"the host tier (layer {l})");
                for (int h = 0; h < heads; h++) _ws[l * heads + h] = new WorkingSet(sizes.WorkingBlocks, _maxBlocks);
                _ready[l] = new CudaEvent();
                _d0[l] = new CudaEvent();
                _d1[l] = new CudaEvent();
                _p0[l] = new CudaEvent();
                _p1[l] = new CudaEvent();
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Device bytes: the slot pool (home and working slots), summaries, tables and scratch.</summary>
    public long DeviceBytes => _pool.DeviceBytes + _sum.Sum(b => b?.Bytes ?? 0) + _sinkK.Sum(b => b?.Bytes ?? 0) + _sinkV.Sum(b => b?.Bytes ?? 0)
        + (_homeBt?.Bytes ?? 0) + (_table?.Bytes ?? 0) + (_part?.Bytes ?? 0) + (_sel?.Bytes ?? 0) + (_estDev?.Bytes ?? 0) + (_estSpecDev?.Bytes ?? 0);

    /// <summary>Device bytes of the per-block key summaries alone.</summary>
    public long SummaryBytes => _sum.Sum(b => b?.Bytes ?? 0);

    /// <summary>Pinned host bytes of the host tier (allocated for <see cref="OffloadSizes.HostBlocks"/>).</summary>
    public long HostBytes => _host.Sum(l => l?.Sum(b => b?.Bytes ?? 0) ?? 0);

    /// <summary>Bytes of one block (every layer and KV head) in either tier.</summary>
    public long BlockBytes => _stats.BlockBytes * _shape.Layers * _shape.KvHeads;

    /// <summary>Counters since creation (copy times of the last steps read once they completed).</summary>
    public OffloadStats Stats
    {
        get
        {
            _ctx.MakeCurrent();
            _ctx.Synchronize();
            _copy.Synchronize();
            for (int l = 0; l < _shape.Layers; l++)
            {
                ReadTimes(l, prefetch: false);
                ReadTimes(l, prefetch: true);
            }
            return _stats.Clone();
        }
    }

    public void BeginChunk(ReadOnlySpan<int> tokens) { }

    void IDeviceKvSequence.AppendDevice(int layer, ulong k, ulong v, int n)
    {
        int slot = _count[layer];
        if (slot + n > Capacity)
            throw new InvalidOperationException($"offloaded KV sequence full: {slot} + {n} tokens exceed its capacity of {Capacity}");
        Hold(slot + n);
        var nuq = _pool.Nuq![layer];
        _kernels.AppendNuqKeys(k, n, _shape.KvHeads, _shape.HeadDim, slot, nuq, _sink, _sinkK[layer].Pointer, _homeBt.Pointer);
        _kernels.AppendNuqValues(v, n, _shape.KvHeads, _shape.HeadDim, slot, nuq, _sink, _sinkV[layer].Pointer, _homeBt.Pointer);
        _kernels.OffloadSummarize(k, n, _shape.KvHeads, _rope, slot, _maxBlocks, _sum[layer]);
        _count[layer] = slot + n;
    }

    /// <summary>Device-home blocks for the sequence's first <paramref name="tokens"/> tokens.</summary>
    private void Hold(int tokens)
    {
        int need = (tokens + BT - 1) / BT, first = _held;
        if (need <= _held) return;
        if (need - _held > _pool.FreeBlocks)
            throw new InvalidOperationException($"offloaded KV sequence: the device tier is full ({_sizes.DeviceBlocks} home blocks); move blocks to the host first (MoveToHost)");
        while (_held < need) _home[_held++] = _pool.Rent();
        _homeBt.CopyFrom(_home.AsSpan(first, _held - first), first * 4L);
    }

    /// <summary>
    /// Moves blocks [<paramref name="from"/>, <paramref name="to"/>) (whole, committed, device-home) to the host tier, every
    /// layer and KV head, and gives their device slots back: the device keeps their summaries only.
    /// </summary>
    public void MoveToHost(int from, int to)
    {
        if (from < 0 || to <= from || (long)to * BT > Length)
            throw new ArgumentOutOfRangeException(nameof(to), $"blocks {from}..{to} of a sequence of {Length} tokens (whole blocks only)");
        for (int b = from; b < to; b++)
            if (_home[b] < 0) throw new InvalidOperationException($"block {b} is not on the device");
        if (_hostUsed + (to - from) > _sizes.HostBlocks)
            throw new HostMemoryException($"the host tier holds {_sizes.HostBlocks} blocks: {_hostUsed} used, {to - from} more asked");
        _ctx.MakeCurrent();
        int heads = _shape.KvHeads;
        for (int l = 0; l < _shape.Layers; l++)
        {
            var arrays = _pool.Nuq![l].PagedArrays;
            int jobs = (to - from) * heads * _arraysMoved;
            var buf = Jobs(ref _demandJobs[l], jobs);
            var span = buf.AsSpan<CopyJob>(0, jobs);
            int j = 0;
            for (int b = from; b < to; b++)
                for (int a = 0; a < _arraysMoved; a++)
                {
                    int sb = _arraySlotBytes[a];
                    ulong dev = arrays[_arrayIndex[a]].Buffer.Pointer, host = _host[l][a].DevicePointer;
                    for (int h = 0; h < heads; h++)
                        span[j++] = new CopyJob(dev + (ulong)((h * _pool.MaxTokens + (long)_home[b] * BT) * sb),
                            host + (ulong)((((long)h * _sizes.HostBlocks) + _hostUsed + (b - from)) * BT * sb), (long)BT * sb);
                }
            _kernels.OffloadCopy(buf.DevicePointer, jobs, null);
            _ctx.Synchronize();   // before the job list is rewritten and the slots are given back
        }
        for (int b = from; b < to; b++)
        {
            _hostIndex[b] = _hostUsed++;
            _pool.Return(_home[b]);
            _home[b] = -1;
        }
    }

    void ISpeculativeKvSequence.Speculate(int layer, ulong q)
    {
        if (!_sizes.Speculate || _hostUsed == 0 || layer <= 0 || layer >= _shape.Layers) return;
        int count = _count[layer] + 1;   // this step's token is not appended to the layer yet
        var plan = BlockSelector.Plan(_budget, layer, _shape.Layers, BT, count, count);
        if (!plan.All)
            _kernels.OffloadScore(q, _shape.GroupSize, _shape.HeadDim, _shape.KvHeads, plan.Visible, _maxBlocks, _sum[layer], _shape.ScoreScale,
                _budget.Spread / 100f, _estSpecDev.Pointer);
        _specLayer = layer;
        _specCount = count;
    }

    bool ISpeculativeKvSequence.Speculates => _sizes.Speculate && _hostUsed > 0;

    void IDeviceKvSequence.AttendDevice(int layer, ulong q, int n, ulong output)
    {
        long count = _count[layer];
        var nuq = _pool.Nuq![layer];
        var sinks = (_sinkK[layer].Pointer, _sinkV[layer].Pointer);
        var split = AttentionSplit.For(count, n, _shape.KvHeads, _ctx.Device.Multiprocessors, CudaKvSequence.MaxSplitStates);
        if (n > 1)
        {
            if (_hostUsed > 0) throw new NotSupportedException("a prefill chunk over an offloaded sequence with blocks on the host (decode steps only, one token each)");
            _kernels.AttentionTile(q, null, null, nuq, _table, _pool.MaxTokens, _shape.KvHeads, _shape.GroupSize, _shape.HeadDim, count, n, split,
                _shape.ScoreScale, _part.Pointer, output, _sink, sinks, _rope, _homeBt.Pointer);
            return;
        }
        int heads = _shape.KvHeads, g = _shape.GroupSize;
        var plan = BlockSelector.Plan(_budget, layer, _shape.Layers, BT, (int)count, (int)count);
        if (!plan.All)
        {
            _kernels.OffloadScore(q, g, _shape.HeadDim, heads, plan.Visible, _maxBlocks, _sum[layer], _shape.ScoreScale, _budget.Spread / 100f, _estDev.Pointer);
            CopyDown(_est, _estDev, (long)heads * plan.Visible * g * 4);
        }
        var spec = _specLayer >= 0 ? BlockSelector.Plan(_budget, _specLayer, _shape.Layers, BT, _specCount, _specCount) : default;
        if (_specLayer >= 0 && !spec.All) CopyDown(_estSpec, _estSpecDev, (long)heads * spec.Visible * g * 4);
        Driver.Check(Driver.cuStreamSynchronize(IntPtr.Zero), "cuStreamSynchronize");
        ReadTimes(layer, prefetch: false);   // the last step's demand copies (waited for); this step's prefetch may still run

        // This layer's choice, its misses fetched on the copy stream, the block lists.
        int jobs = Choose(layer, plan, _est, (int)count, prefetch: false, _demandJobs);
        if (jobs > 0)
        {
            _d0[layer].Record(_copy);
            _kernels.OffloadCopy(_demandJobs[layer]!.DevicePointer, jobs, _copy);
            _d1[layer].Record(_copy);
            _dTimed[layer] = true;
            _copiesPending[layer] = true;
        }
        int stride = 1;   // at least 1: a stride of 0 means "no block lists" to the kernel
        for (int h = 0; h < heads; h++) stride = Math.Max(stride, _nChosen[h]);
        long longest = 0;
        for (int h = 0; h < heads; h++)
        {
            long tokens = 0;
            for (int i = 0; i < _nChosen[h]; i++)
            {
                int b = _chosen[h][i];
                _selHost[h * stride + i] = _hostIndex[b] < 0 ? _home[b] : _work[_ws[layer * heads + h].SlotOf(b)];
                _selHost[heads * stride + h * stride + i] = b;
                tokens += Math.Min(BT, count - (long)b * BT);
            }
            _selHost[2 * heads * stride + h] = (int)tokens;
            longest = Math.Max(longest, tokens);
        }
        _sel.CopyFrom(_selHost.AsSpan(0, 2 * heads * stride + heads));
        if (_copiesPending[layer])
        {
            _ready[layer].Record(_copy);
            Driver.Check(Driver.cuStreamWaitEvent(IntPtr.Zero, _ready[layer].Handle, 0), "cuStreamWaitEvent");
            _copiesPending[layer] = false;
        }
        var hb = new HeadBlocks(_sel.Pointer + (ulong)(heads * stride * 4L), _sel.Pointer + (ulong)(2L * heads * stride * 4), stride);
        split = AttentionSplit.For(longest, 1, heads, _ctx.Device.Multiprocessors, CudaKvSequence.MaxSplitStates);
        _kernels.AttentionNuq(q, nuq, _table, heads, g, _shape.HeadDim, longest, 1, split, _shape.ScoreScale, _part.Pointer, output, _sink, sinks,
            _rope, _sel.Pointer, hb);

        // Speculation for the next layer: its predicted blocks start copying while this layer computes.
        if (_specLayer >= 0)
        {
            int sl = _specLayer;
            _specLayer = -1;
            int pj = Choose(sl, spec, _estSpec, _specCount, prefetch: true, _prefetchJobs);
            if (pj > 0)
            {
                ReadTimes(sl, prefetch: true);   // the last step's prefetch for this layer (its attention waited for it)
                _p0[sl].Record(_copy);
                _kernels.OffloadCopy(_prefetchJobs[sl]!.DevicePointer, pj, _copy);
                _p1[sl].Record(_copy);
                _pTimed[sl] = true;
                _copiesPending[sl] = true;
            }
        }
    }

    private static unsafe void CopyDown(PinnedHostBuffer dst, DeviceBuffer src, long bytes) =>
        Driver.Check(Driver.cuMemcpyDtoHAsync(dst.Host, src.Pointer, (nuint)bytes, IntPtr.Zero), "cuMemcpyDtoHAsync");

    /// <summary>
    /// Chooses every KV head's blocks of <paramref name="layer"/> (all heads in parallel, the CPU tier's rule over the
    /// device's estimates), makes room for the chosen host blocks not on the device and writes their copies into the
    /// layer's job list; returns how many. A real choice (not <paramref name="prefetch"/>) counts hits and leaves the
    /// chosen blocks in _chosen / _nChosen.
    /// </summary>
    private int Choose(int layer, SelectionPlan plan, PinnedHostBuffer est, int count, bool prefetch, PinnedHostBuffer?[] jobLists)
    {
        var sw = Stopwatch.StartNew();
        try
        {
            Parallel.For(0, _shape.KvHeads, h => ChooseHead(layer, h, plan, est, count, prefetch));
        }
        catch (AggregateException e)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
        return Gather(layer, prefetch, jobLists, sw);
    }

    /// <summary>One KV head's part of <see cref="Choose"/>.</summary>
    private void ChooseHead(int layer, int h, SelectionPlan plan, PinnedHostBuffer est, int count, bool prefetch)
    {
        int heads = _shape.KvHeads, g = _shape.GroupSize;
        {
            var chosen = _chosen[h];
            int n = plan.All ? BlockSelector.Identity(plan.Visible, chosen)
                : BlockSelector.Rank(_budget, plan, est.AsSpan<float>((long)h * plan.Visible * g * 4, plan.Visible * g), g, count, BT, chosen, _scores[h], _order[h]);
            _nChosen[h] = n;
            var ws = _ws[layer * heads + h];
            var jobs = _headJobs[h];
            jobs.Clear();
            int hostChosen = 0;
            for (int i = 0; i < n; i++) if (_hostIndex[chosen[i]] >= 0) hostChosen++;
            if (hostChosen > ws.Slots)
            {
                // More host blocks than working slots: a prediction is dropped; a real choice cannot be served.
                if (prefetch) { _nChosen[h] = 0; _hits[h] = _pfUsed[h] = _hostChosen[h] = 0; return; }
                throw new InvalidOperationException($"offloaded KV sequence: layer {layer}, KV head {h} chose {hostChosen} host blocks, more than its " +
                                                    $"{ws.Slots} working slots (OffloadSizes.WorkingBlocks)");
            }
            long hits = 0, used = 0, host = 0;
            for (int i = 0; i < n; i++)
            {
                int b = chosen[i];
                if (_hostIndex[b] < 0) continue;
                host++;
                int s = ws.SlotOf(b);
                if (s < 0) continue;
                hits++;
                if (ws.Touch(s, read: !prefetch)) used++;
            }
            for (int i = 0; i < n; i++)
            {
                int b = chosen[i];
                if (_hostIndex[b] < 0 || ws.SlotOf(b) >= 0) continue;
                long phys = _work[ws.Take(b, prefetch)];
                for (int a = 0; a < _arraysMoved; a++)
                {
                    int sb = _arraySlotBytes[a];
                    ulong dev = _pool.Nuq![layer].PagedArrays[_arrayIndex[a]].Buffer.Pointer, hostArr = _host[layer][a].DevicePointer;
                    jobs.Add(new CopyJob(hostArr + (ulong)(((long)h * _sizes.HostBlocks + _hostIndex[b]) * BT * sb),
                        dev + (ulong)((h * _pool.MaxTokens + phys * BT) * sb), (long)BT * sb));
                }
            }
            _hits[h] = hits;
            _pfUsed[h] = used;
            _hostChosen[h] = host;
            if (prefetch) _nChosen[h] = 0;   // a prediction leaves no block list
        }
    }

    /// <summary>The heads' copies into the layer's job list, and the counters; returns the number of copies.</summary>
    private int Gather(int layer, bool prefetch, PinnedHostBuffer?[] jobLists, Stopwatch sw)
    {
        int heads = _shape.KvHeads;
        int total = 0;
        foreach (var j in _headJobs) total += j.Count;
        if (total > 0)
        {
            var buf = Jobs(ref jobLists[layer], total);
            var span = buf.AsSpan<CopyJob>(0, total);
            int at = 0;
            foreach (var j in _headJobs)
            {
                System.Runtime.InteropServices.CollectionsMarshal.AsSpan(j).CopyTo(span[at..]);
                at += j.Count;
            }
        }
        long blocks = total / Math.Max(1, _arraysMoved);
        _stats.SelectMs += sw.Elapsed.TotalMilliseconds;
        if (prefetch)
        {
            _stats.Prefetched += blocks;
            _stats.PrefetchBytes += blocks * _stats.BlockBytes;
        }
        else
        {
            _stats.Selections += heads;
            for (int h = 0; h < heads; h++)
            {
                _stats.ChosenBlocks += _nChosen[h];
                _stats.HostBlocksChosen += _hostChosen[h];
                _stats.Hits += _hits[h];
                _stats.PrefetchedUsed += _pfUsed[h];
            }
            _stats.DemandFetched += blocks;
            _stats.DemandBytes += blocks * _stats.BlockBytes;
        }
        return total;
    }

    /// <summary>A layer's pinned job list with room for <paramref name="jobs"/> copies (grown after the copy stream has
    /// finished with the old one).</summary>
    private PinnedHostBuffer Jobs(ref PinnedHostBuffer? buf, int jobs)
    {
        long bytes = jobs * 24L;
        if (buf != null && buf.Bytes >= bytes) return buf;
        _copy.Synchronize();
        _ctx.Synchronize();
        buf?.Dispose();
        buf = new PinnedHostBuffer(_ctx, Math.Max(bytes, 2 * (buf?.Bytes ?? 0)), "block copy lists");
        return buf;
    }

    /// <summary>Adds the time a layer's last recorded demand or prefetch copies took (complete when this is called).</summary>
    private void ReadTimes(int layer, bool prefetch)
    {
        if (!prefetch && _dTimed[layer])
        {
            _stats.DemandMs += CudaEvent.Elapsed(_d0[layer], _d1[layer]);
            _dTimed[layer] = false;
        }
        if (prefetch && _pTimed[layer])
        {
            _p1[layer].Synchronize();
            _stats.PrefetchMs += CudaEvent.Elapsed(_p0[layer], _p1[layer]);
            _pTimed[layer] = false;
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
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try { _ctx.MakeCurrent(); _ctx.Synchronize(); _copy.Synchronize(); } catch (CudaException) { /* freeing anyway */ }
        foreach (var e in new[] { _ready, _d0, _d1, _p0, _p1 }) if (e != null) foreach (var x in e) x?.Dispose();
        foreach (var b in new[] { _homeBt, _table, _part, _sel, _estDev, _estSpecDev }) b?.Dispose();
        foreach (var arr in new[] { _sum, _sinkK, _sinkV }) if (arr != null) foreach (var b in arr) b?.Dispose();
        _est?.Dispose();
        _estSpec?.Dispose();
        foreach (var arr in new[] { _demandJobs, _prefetchJobs }) if (arr != null) foreach (var b in arr) b?.Dispose();
        if (_host != null) foreach (var l in _host) if (l != null) foreach (var b in l) b?.Dispose();
        _copy?.Dispose();
        _pool?.Dispose();
    }
}

/// <summary>A device sequence that takes a prediction of a layer's query before the layer runs (the CUDA model computes
/// layer l+1's query from layer l's input while at layer l: <see cref="CudaTransformer"/>).</summary>
internal interface ISpeculativeKvSequence
{
    bool Speculates { get; }

    /// <summary>Layer <paramref name="layer"/>'s predicted query (f32 [Q dim], post-RoPE) for the coming decode step.</summary>
    void Speculate(int layer, ulong q);
}
