using Kvq.Tensors;

namespace Kvq.Cache.Attention;

/// <summary>
/// One layer's attention for every sequence of a batched step in ONE parallel region. Attending the sequences one at a
/// time (<see cref="BlockAttention.Attend"/> each) opens a region per sequence and layer (16 sequences x 8 layers: 128
/// hand-offs of ~30 us of work per step, each waiting for its slowest piece); here the work units of all sequences
/// ((sequence, KV head, query chunk, block range) in the split plan each sequence would use alone,
/// <see cref="BlockAttention.SplitsFor"/>) are claimed one at a time by the caller and the workers
/// (<see cref="Parallelism.ForEach{TJob}"/>). A unit's result does not depend on which thread runs it or what else is in
/// the batch, so every sequence's output is bitwise what it gets alone. Reused across steps (no allocation once grown).
/// </summary>
internal sealed unsafe class BatchAttention
{
    private IKvBlockReader[] _kv = new IKvBlockReader[8];
    private int[] _row = new int[8];       // first query row of each sequence in the step's (rows, qDim) buffers
    private int[] _n = new int[8];         // its query rows
    private int[] _splits = new int[8];    // split-K ranges per work item
    private int[] _blocks = new int[8];    // the layer's blocks
    private int[] _unit0 = new int[9];     // first work unit of each sequence (prefix sums; one past the end last)
    private int[] _state0 = new int[8];    // first partial state of each split sequence
    private int _count;

    public int Count => _count;

    public void Clear() => _count = 0;

    /// <summary>Adds a sequence whose <paramref name="n"/> query rows start at row <paramref name="row"/>; false (not
    /// added) when its blocks are of another size than the first sequence's (the threads' scratch is sized by it).</summary>
    public bool TryAdd(IKvBlockReader kv, int row, int n)
    {
        if (_count > 0 && (kv.BlockTokens != _kv[0].BlockTokens || !(ReferenceEquals(kv.Shape, _kv[0].Shape) || kv.Shape == _kv[0].Shape))) return false;
        if (_count == _kv.Length)
        {
            int size = _count * 2;
            Array.Resize(ref _kv, size);
            Array.Resize(ref _row, size);
            Array.Resize(ref _n, size);
            Array.Resize(ref _splits, size);
            Array.Resize(ref _blocks, size);
            Array.Resize(ref _unit0, size + 1);
            Array.Resize(ref _state0, size);
        }
        _kv[_count] = kv;
        _row[_count] = row;
        _n[_count] = n;
        _count++;
        return true;
    }

    /// <summary>output rows = attention of the query rows q (rows, qDim) of every added sequence over its stored
    /// tokens of <paramref name="layer"/> (all sequences of one shape and block size).</summary>
    public void Attend(int layer, ReadOnlySpan<float> q, Span<float> output, Parallelism par)
    {
        if (_count == 0) return;
        var shape = _kv[0].Shape;
        int units = 0, states = 0, splitRows = 0;
        for (int i = 0; i < _count; i++)
        {
            var kv = _kv[i];
            int n = _n[i];
            int chunks = (n + BlockAttention.QueryChunk - 1) / BlockAttention.QueryChunk;
            int items = shape.KvHeads * chunks;
            int blocks = (kv.Count(layer) + kv.BlockTokens - 1) / kv.BlockTokens;
            int splits = BlockAttention.SplitsFor(items, blocks, par.Threads);
            _blocks[i] = blocks;
            _splits[i] = splits;
            _unit0[i] = units;
            _state0[i] = states;
            units += items * splits;
            if (splits > 1)
            {
                states += items * splits;
                splitRows = Math.Max(splitRows, shape.GroupSize * Math.Min(n, BlockAttention.QueryChunk));
            }
        }
        _unit0[_count] = units;
        fixed (float* pq = q)
        fixed (float* po = output)
        {
            var partial = states > 0 ? PartialStates.For(states, splitRows, shape.HeadDim) : null;
            var job = new Job(this, layer, pq, po, partial);
            par.ForEach(units, ref job);
            if (partial == null) return;
            for (int i = 0; i < _count; i++)
            {
                if (_splits[i] == 1) continue;
                int n = _n[i];
                int chunks = (n + BlockAttention.QueryChunk - 1) / BlockAttention.QueryChunk;
                BlockAttention.MergeSplits(shape, partial, _state0[i], shape.KvHeads * chunks, _splits[i], po + (long)_row[i] * shape.QDim, n, chunks);
            }
        }
    }

    private readonly struct Job(BatchAttention b, int layer, float* q, float* o, PartialStates? partial) : IRangeJob
    {
        public void Run(int start, int end)
        {
            var shape = b._kv[0].Shape;
            var scratch = AttentionScratch.For(shape, b._kv[0].BlockTokens, BlockAttention.QueryChunk);
            int i = 0;
            for (int unit = start; unit < end; unit++)
            {
                while (unit >= b._unit0[i + 1]) i++;
                var kv = b._kv[i];
                int n = b._n[i], splits = b._splits[i], blocks = b._blocks[i];
                int chunks = (n + BlockAttention.QueryChunk - 1) / BlockAttention.QueryChunk;
                int work = unit - b._unit0[i];
                int item = work / splits, sp = work % splits;
                int head = item / chunks, c = item % chunks;
                int t0 = c * BlockAttention.QueryChunk, t1 = Math.Min(n, t0 + BlockAttention.QueryChunk);
                int b0 = (int)((long)blocks * sp / splits), b1 = (int)((long)blocks * (sp + 1) / splits);
                long offset = (long)b._row[i] * shape.QDim;
                BlockAttention.Head(kv, layer, head, q + offset, o + offset, n, t0, t1, b0, b1, scratch, splits > 1 ? partial : null,
                    b._state0[i] + work);
            }
        }
    }
}
