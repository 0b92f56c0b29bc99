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
/// copies in shard 0 only), attended by the model's own split-K kernels over the shard's tokens alone
/// (<see cref="CudaKvSequence.AttendPartial"/>). A shard's splits fold into one state per query row (shard_state);
/// the states, laid out [shard][row] as an all-gather leaves them, merge exactly into the output (shard_combine).
/// <para>Checking mode (no <see cref="IShardExchange"/>): every shard in this process, on one GPU. With an exchange
/// (<see cref="NcclCommunicator"/>), this process holds shard <see cref="IShardExchange.Rank"/> only and the states of
/// the others arrive by all-gather; every rank computes the same output. Every rank runs the whole model on every token
/// (weights replicated); only the KV cache and its attention are split.</para>
/// <para>A chunk of query rows that crosses a shard boundary is attended per group of rows landing in one shard: the
/// rows see the shards before theirs whole (a full shard: the kernel's causal limit is put past its last token, with a
/// split plan that ends exactly there), their own shard causally, the later ones not at all.</para>
/// </summary>
public sealed class ShardedKvSequence : IKvSequence, IKvMemoryReport, IDisposable, IDeviceKvSequence
{
    private readonly CudaContext _ctx;
    private readonly ShardKernels _sk;
    private readonly KvShape _shape;
    private readonly CudaKvSequence?[] _shards;   // null: held by another rank
    private readonly IShardExchange? _exchange;
    private readonly int[] _count;
    private readonly int _maxRows, _maxStates = 1024;
    private readonly DeviceBuffer _part, _states;
    private DeviceBuffer? _hostK, _hostV, _hostQ, _hostOut;

    public ShardLayout Layout { get; }
    public KvCacheConfig Config { get; }
    public int Length { get; private set; }
    /// <summary>The shards this process holds (all of them in checking mode).</summary>
    public IEnumerable<int> LocalShards => Enumerable.Range(0, _shards.Length).Where(s => _shards[s] != null);

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
        try
        {
            for (int s = 0; s < layout.Shards; s++)
            {
                if (exchange != null && s != exchange.Rank) continue;
                var c = s == 0 ? config : config with { SinkTokens = 0 };
                var cache = new CudaKvCache(ctx, kernels, shape, c, layout.Capacity[s], codecs, null, layout.First[s]);
                _shards[s] = cache.CreateOwnedSequence(layout.Capacity[s]);
            }
            _part = ctx.Allocate((long)_maxStates * shape.Heads * (shape.HeadDim + 2) * 4);
            _states = ctx.Allocate((long)layout.Shards * _maxRows * shape.Heads * (shape.HeadDim + 2) * 4);
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
        long p0 = _count[layer] - n;
        int heads = _shape.Heads, hd = _shape.HeadDim, rows = n * heads;
        long stride = (hd + 2) * 4L, rankBytes = rows * stride;
        ulong qRow = (ulong)_shape.QDim * 4;
        // Every state empty (sum 0) first: a shard that sees none of a row's keys leaves it so.
        Driver.Check(Driver.cuMemsetD8Async(_states.Pointer, 0, (nuint)(Layout.Shards * rankBytes), IntPtr.Zero), "cuMemsetD8Async");
        foreach (var (owner, from, to) in Layout.RowGroups(p0, n))
        {
            int m = to - from;
            for (int s = 0; s <= owner; s++)
            {
                var shard = _shards[s];
                if (shard == null) continue;
                long count;
                AttentionSplit split;
                if (s < owner)
                {
                    // A full shard before these rows: all of it visible to every row.
                    int cap = Layout.Capacity[s];
                    if (shard.Count(layer) != cap) throw new InvalidOperationException($"shard {s} of layer {layer} holds {shard.Count(layer)} of {cap} tokens before a later shard's rows");
                    split = WholeSplit(cap, m);
                    count = cap + m - 1;
                }
                else
                {
                    count = shard.Count(layer);
                    split = AttentionSplit.For(count, m, _shape.KvHeads, _ctx.Device.Multiprocessors, _maxStates);
                }
                shard.AttendPartial(layer, q + (ulong)from * qRow, m, count, split, _part);
                _sk.State(_part.Pointer, split.Splits, m * heads, hd, _states.Pointer + (ulong)(s * rankBytes + from * heads * stride));
            }
        }
        _exchange?.AllGather(_states.Pointer, rankBytes);
        _sk.Combine(_states.Pointer, Layout.Shards, rows, hd, output);
    }

    /// <summary>A split plan over exactly <paramref name="tokens"/> tokens (whole blocks): splits of equal whole 128-token
    /// tiles that end at the last token, as many as the device wants (<see cref="AttentionSplit.For"/>) within the
    /// partials' room, rounded to a divisor of the tiles.</summary>
    internal AttentionSplit WholeSplit(int tokens, int rows)
    {
        int tiles = tokens / 128;
        var want = AttentionSplit.For(tokens, rows, _shape.KvHeads, _ctx.Device.Multiprocessors, _maxStates);
        int cap = Math.Max(1, _maxStates / Math.Max(1, rows));
        int per = (tiles + want.Splits - 1) / want.Splits;
        while (tiles % per != 0 || tiles / per > cap) per++;
        return new AttentionSplit(tiles / per, per * 128);
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

    public void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n)
    {
        int len = n * _shape.KvDim;
        _ctx.MakeCurrent();
        Stage(ref _hostK, k[..len]);
        Stage(ref _hostV, v[..len]);
        AppendDevice(layer, _hostK!.Pointer, _hostV!.Pointer, n);
    }

    public void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par)
    {
        int len = n * _shape.QDim;
        _ctx.MakeCurrent();
        Stage(ref _hostQ, q[..len]);
        Grow(ref _hostOut, len * 4L);
        AttendDevice(layer, _hostQ!.Pointer, n, _hostOut!.Pointer);
        _hostOut.CopyTo(output[..len]);
    }

    /// <summary>The states of the last <see cref="AttendDevice"/> of <paramref name="rows"/> rows, [shard][row][head dim + 2]
    /// (for checks against the CPU's <see cref="Cache.Attention.AttentionStates"/>).</summary>
    public float[] DownloadStates(int rows) => _states.Download<float>((long)Layout.Shards * rows * (_shape.HeadDim + 2));

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

    /// <summary>Device bytes of this process's shards, the partials and the gathered states.</summary>
    public long DeviceBytes => _shards.Sum(s => s?.DeviceBytes ?? 0) + (_part?.Bytes ?? 0) + (_states?.Bytes ?? 0);

    private void Stage(ref DeviceBuffer? buf, ReadOnlySpan<float> data)
    {
        Grow(ref buf, data.Length * 4L);
        buf!.CopyFrom(data);
    }

    private void Grow(ref DeviceBuffer? buf, long bytes)
    {
        if (buf != null && buf.Bytes >= bytes) return;
        buf?.Dispose();
        buf = _ctx.Allocate(Math.Max(bytes, 256));
    }

    public void Dispose()
    {
        foreach (var s in _shards) s?.Dispose();
        _part?.Dispose();
        _states?.Dispose();
        _hostK?.Dispose();
        _hostV?.Dispose();
        _hostQ?.Dispose();
        _hostOut?.Dispose();
    }
}
