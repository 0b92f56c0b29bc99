using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cuda.Model;
using Kvq.Cuda.Native;
using Kvq.Tensors;

namespace Kvq.Cuda.Distributed;

/// <summary>
/// One sequence's KV cache cut into contiguous shards (<see cref="ShardLayout"/>; sequence parallelism,
/// docs/multigpu.md). Each shard is a <see cref="CudaKvSequence"/> in a cache of its own whose slot 0 is the shard's
/// first position (f16 keys rotated at their global positions, KVQuant keys by an angle table shifted to them; sink
/// copies in shard 0 only): its stored bytes are those the unsharded cache holds for the same positions (both encode
/// token by token). Each shard is attended by the model's own split-K kernels over its tokens alone
/// (<see cref="CudaKvSequence.AttendPartial"/>), every query row of the call at once, with the splits of a
/// <see cref="ShardSplitPlan"/>; the split partials of all shards, laid out [shard][row][split slot] as an all-gather
/// leaves them, merge in order into the output (shard_merge, attn_merge's arithmetic). Where the shard boundaries fall
/// on the unsharded split plan's boundaries (<see cref="ShardSplitPlan.Aligned"/>), the shards of one GPU (checking
/// mode, or NCCL world size 1) run the unsharded splits and the output is the unsharded output bit for bit; over N GPUs
/// each shard takes a plan that fills its own GPU.
/// <para>Checking mode (no <see cref="IShardExchange"/>): every shard in this process, on one GPU. With an exchange
/// (<see cref="NcclCommunicator"/>), this process holds shard <see cref="IShardExchange.Rank"/> only and the partials
/// of the others arrive by all-gather; every rank computes the same output. Every rank runs the whole model on every
/// token (weights replicated); only the KV cache and its attention are split.</para>
/// </summary>
public sealed class ShardedKvSequence : IKvSequence, IKvMemoryReport, IDisposable, IDeviceKvSequence
{
    private readonly CudaContext _ctx;
    private readonly ShardKernels _sk;
    private readonly KvShape _shape;
    private readonly CudaKvSequence?[] _shards;   // null: held by another rank
    private readonly IShardExchange? _exchange;
    private readonly int[] _count;
    private readonly int _maxRows;
    private readonly long _partBytes;        // room of one shard's part of _gathered
    private readonly DeviceBuffer _gathered; // split partials [shard][row][split slot][head dim + 2]
    private readonly HostStaging _staging;

    public ShardLayout Layout { get; }
    public KvCacheConfig Config { get; }
    public int Length { get; private set; }
    /// <summary>The shards this process holds (all of them in checking mode).</summary>
    public IEnumerable<int> LocalShards => Enumerable.Range(0, _shards.Length).Where(s => _shards[s] != null);
    /// <summary>Attention calls so far whose shards ran the unsharded split plan (output bit for bit the unsharded one),
    /// and those that could not (a shard boundary inside an unsharded split: equal up to f32 reassociation).</summary>
    public (int Aligned, int Unaligned) PlanCounts => (_aligned, _unaligned);
    private int _aligned, _unaligned;

    /// <summary>Shard <paramref name="s"/>'s own sequence (null where another rank holds it), for checks.</summary>
    internal CudaKvSequence? Shard(int s) => _shards[s];

    internal ShardedKvSequence(CudaContext ctx, ModelKernels kernels, ShardKernels sk, KvShape shape, KvCacheConfig config,
        (NuqChannelCodec[] Keys, NuqTokenCodec[] Values)[]? codecs, ShardLayout layout, IShardExchange? exchange, int maxRows)
    {
        if (exchange != null && exchange.WorldSize != layout.Shards)
            throw new ArgumentException($"{layout} over {exchange.WorldSize} ranks: one shard per rank", nameof(layout));
        if (config.SinkTokens > layout.Capacity[0])
            throw new ArgumentException($"{config.SinkTokens} sink tokens do not fit shard 0 ({layout.Capacity[0]} tokens)", nameof(layout));
        _ctx = ctx;
        _sk = sk;
        _shape = shape;
        Config = config;
        Layout = layout;
        _exchange = exchange;
        _maxRows = Math.Max(1, maxRows);
        _count = new int[shape.Layers];
        _shards = new CudaKvSequence?[layout.Shards];
        _staging = new HostStaging(ctx);
        try
        {
            for (int s = 0; s < layout.Shards; s++)
            {
                if (exchange != null && s != exchange.Rank) continue;
                var c = s == 0 ? config : config with { SinkTokens = 0 };
                var cache = new CudaKvCache(ctx, kernels, shape, c, layout.Capacity[s], codecs, null, layout.First[s]);
                _shards[s] = cache.CreateOwnedSequence(layout.Capacity[s]);
            }
            _partBytes = (long)ShardSplitPlan.SlotsPerPart(_maxRows, shape.KvHeads, ctx.Device.Multiprocessors, CudaKvSequence.MaxSplitStates)
                         * shape.Heads * (shape.HeadDim + 2) * 4;
            _gathered = ctx.Allocate(layout.Shards * _partBytes);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public void BeginChunk(ReadOnlySpan<int> tokens) { }

    public void AppendDevice(int layer, ulong k, ulong v, int n)
    {
        long c = _count[layer];
        if (c + n > Layout.Total)
            throw new InvalidOperationException($"CUDA KV cache full: {c} + {n} tokens exceed the {Layout.Total} of {Layout}");
        ulong kvRow = (ulong)_shape.KvDim * 4;
        foreach (var (owner, from, to) in Layout.RowGroups(c, n))
            _shards[owner]?.AppendDevice(layer, k + (ulong)from * kvRow, v + (ulong)from * kvRow, to - from);
        _count[layer] = (int)(c + n);
    }

    public void AttendDevice(int layer, ulong q, int n, ulong output)
    {
        if (n > _maxRows) throw new ArgumentOutOfRangeException(nameof(n), n, $"a sharded sequence attends at most {_maxRows} query rows at once");
        var plan = ShardSplitPlan.For(Layout, _count[layer], n, _shape.KvHeads, _ctx.Device.Multiprocessors, CudaKvSequence.MaxSplitStates,
            unshardedSplits: _exchange == null || _exchange.WorldSize == 1);
        if (plan.Aligned) _aligned++;
        else _unaligned++;
        int rows = n * _shape.Heads, hd = _shape.HeadDim;
        long partBytes = (long)rows * plan.Stride * (hd + 2) * 4;
        if (partBytes > _partBytes) throw new InvalidOperationException($"{plan}: {partBytes} bytes of partials per shard exceed the {_partBytes} allocated");
        // Every slot empty (sum 0) first: split slots past a shard's splits, and the parts of shards without tokens, stay so.
        Driver.Check(Driver.cuMemsetD8Async(_gathered.Pointer, 0, (nuint)(Layout.Shards * partBytes), IntPtr.Zero), "cuMemsetD8Async");
        for (int s = 0; s < _shards.Length; s++)
            if (_shards[s] is { } shard && plan.Splits[s] is { } split)
                shard.AttendPartial(layer, q, n, plan.Counts[s], split, _gathered.Pointer + (ulong)(s * partBytes));
        _exchange?.AllGather(_gathered.Pointer, partBytes);
        _sk.Merge(_gathered.Pointer, Layout.Shards, plan.Stride, rows, hd, output);
    }

    public void Commit(int n)
    {
        long before = Length;
        Length += n;
        for (int l = 0; l < _count.Length; l++)
            if (_count[l] != Length)
                throw new InvalidOperationException($"commit of {n} tokens: layer {l} holds {_count[l]} tokens, expected {Length}");
        for (int s = 0; s < _shards.Length; s++)
        {
            int added = Layout.Held(s, Length) - Layout.Held(s, before);
            if (added > 0) _shards[s]?.Commit(added);
        }
    }

    public void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n) => _staging.Append(this, layer, k, v, n, _shape.KvDim);

    public void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par) => _staging.Attend(this, layer, q, n, output, _shape.QDim);

    /// <summary>What the shards of this process hold (tokens of other ranks are not counted).</summary>
    public KvMemory Memory()
    {
        KvMemory? sum = null;
        foreach (var s in _shards)
        {
            if (s == null) continue;
            var m = s.Memory();
            sum = sum == null ? m : new KvMemory(sum.Keys + m.Keys, sum.Values + m.Values, sum.StagingBytes + m.StagingBytes, sum.Tokens + m.Tokens, sum.ValuesPerTokenPerSide);
        }
        return sum ?? new KvMemory(KvBytes.CodesOnly(0), KvBytes.CodesOnly(0), 0, 0, _shape.Layers * _shape.KvDim);
    }

    /// <summary>Device bytes of this process's shards and the gathered split partials.</summary>
    public long DeviceBytes => _shards.Sum(s => s?.DeviceBytes ?? 0) + (_gathered?.Bytes ?? 0);

    public void Dispose()
    {
        foreach (var s in _shards) s?.Dispose();
        _gathered?.Dispose();
        _staging?.Dispose();
    }
}
