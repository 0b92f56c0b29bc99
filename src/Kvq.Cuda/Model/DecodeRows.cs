using System.Runtime.InteropServices;
using Kvq.Model;

namespace Kvq.Cuda.Model;

/// <summary>model.cu's DecodeRow (48 bytes): one decode row of a batched launch, read by the kernel from device memory.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct DecodeRow
{
    public ulong BlockTable, SinkK, SinkV;
    public int Count, PerSplit, Slot, KeyPosition, QueryPosition, Token;
}

/// <summary>
/// The decode rows of a batched step (<see cref="CudaTransformer.ForwardBatch"/>) that one launch per layer serves:
/// one-token segments of paged sequences of one cache. Each row keeps what its own step would have used (block
/// table, slot, positions, visible tokens, its split of the stored tokens: <see cref="CudaKvSequence.DecodeSplit"/>),
/// so a row's attention is the lone step's partials and merge, bit for bit; a launch covers the most splits of any row
/// and the rows with fewer write empty partials that the merge skips. The rows' tables (one per layer: the sink copies
/// are per layer) go up in one copy a step. Without this every sequence launches its own append, attention and merge
/// in every layer (~4,000 launches a step at 32 sequences of the 7B shape).
/// </summary>
internal sealed class DecodeRows : IDisposable
{
    private static readonly int RowBytes = Marshal.SizeOf<DecodeRow>();
    private readonly CudaContext _ctx;
    private DecodeRow[] _host = [];
    private DeviceBuffer? _table, _part;
    private readonly List<CudaKvSequence> _seqs = new();
    private int _splits;

    public DecodeRows(CudaContext ctx) => _ctx = ctx;

    /// <summary>Rows planned for the current step (0: the step has none in one launch).</summary>
    public int Count => _seqs.Count;

    /// <summary>The cache every planned row's sequence lives in.</summary>
    public CudaKvCache? Cache { get; private set; }

    /// <summary>Whether <paramref name="s"/> can be a row: one token, a paged sequence of this model's kernels whose cache is
    /// <paramref name="cache"/> (or the first row's, when null).</summary>
    public static bool Fits(in BatchSegment s, ModelKernels kernels, CudaKvCache? cache) =>
        s.Count == 1 && s.Kv is CudaKvSequence { GraphCapable: true } seq && ReferenceEquals(seq.Cache.Kernels, kernels)
        && (cache == null || ReferenceEquals(seq.Cache, cache));

    /// <summary>Picks the step's rows (the one-token segments of the cache that has most of them, at least two; else none:
    /// the per-sequence path is as good for one) and marks them in <paramref name="batched"/>. Nothing changes on the
    /// sequences yet.</summary>
    public void Plan(ReadOnlySpan<BatchSegment> segments, ModelKernels kernels, Span<bool> batched)
    {
        _seqs.Clear();
        Cache = null;
        batched.Clear();   // all of it: segments may be empty (rows off) while the step has segments
        CudaKvCache? cache = null;
        int rows = 0;
        for (int i = 0; i < segments.Length; i++)
        {
            if (!Fits(segments[i], kernels, null)) continue;
            var c = ((CudaKvSequence)segments[i].Kv).Cache;
            if (ReferenceEquals(c, cache)) continue;
            int n = 0;
            for (int j = i; j < segments.Length; j++)
                if (Fits(segments[j], kernels, c)) n++;
            if (n > rows) (cache, rows) = (c, n);
        }
        if (rows < 2) return;
        Cache = cache;
        for (int i = 0; i < segments.Length; i++)
            if (Fits(segments[i], kernels, cache))
            {
                batched[i] = true;
                _seqs.Add((CudaKvSequence)segments[i].Kv);
            }
    }

    /// <summary>Takes each row's slot (and its block, when it starts one), fills the rows of every layer and sends them
    /// to the device. <paramref name="tokens"/>, <paramref name="segments"/> and <paramref name="batched"/> as given to
    /// <see cref="Plan"/>.</summary>
    public void Begin(ReadOnlySpan<int> tokens, ReadOnlySpan<BatchSegment> segments, ReadOnlySpan<bool> batched)
    {
        int rows = _seqs.Count, layers = Cache!.Shape.Layers;
        if (_host.Length < rows * layers) _host = new DecodeRow[rows * layers];
        _splits = 1;
        for (int i = 0, r = 0; i < segments.Length; i++)
        {
            if (!batched[i]) continue;
            var seq = _seqs[r];
            var split = seq.DecodeSplit();
            var step = seq.BeginDecodeStep(tokens[segments[i].Start]);
            _splits = Math.Max(_splits, split.Splits);
            for (int l = 0; l < layers; l++)
            {
                var (sinkK, sinkV) = seq.SinkPointers(l);
                _host[l * rows + r] = new DecodeRow
                {
                    BlockTable = seq.BlockTablePointer, SinkK = sinkK, SinkV = sinkV, Count = step.Count, PerSplit = split.PerSplit,
                    Slot = step.Slot, KeyPosition = step.KeyPosition, QueryPosition = step.QueryPosition, Token = segments[i].Start,
                };
            }
            r++;
        }
        long bytes = (long)rows * layers * RowBytes;
        DeviceBuffer.AtLeast(ref _table, _ctx, Math.Max(bytes, 4096)).CopyFrom((ReadOnlySpan<DecodeRow>)_host.AsSpan(0, rows * layers));
        var s = Cache.Shape;
        DeviceBuffer.AtLeast(ref _part, _ctx, Math.Max((long)rows * _splits * s.Heads * (s.HeadDim + 2) * 4, 4096));
    }

    /// <summary>Appends the rows' keys and values of <paramref name="layer"/> (f32 [step rows][KV dim], pre-RoPE) in one
    /// launch (two for KVQuant: keys, values).</summary>
    public void Append(int layer, ulong k, ulong v)
    {
        var c = Cache!;
        var s = c.Shape;
        int rows = _seqs.Count;
        ulong table = RowsOf(layer);
        if (c.Nuq is { } nuq)
        {
            c.Kernels.AppendNuqKeys(k, rows, s.KvHeads, s.HeadDim, 0, nuq[layer], c.Config.SinkTokens, 0, 0, 0, table);
            c.Kernels.AppendNuqValues(v, rows, s.KvHeads, s.HeadDim, 0, nuq[layer], c.Config.SinkTokens, 0, 0, 0, table);
        }
        else c.Kernels.AppendF16(k, v, rows, s.KvHeads, c.Rope, 0, 0, c.MaxTokens, c.K[layer], c.V[layer], 0, 0, default, table);
    }

    /// <summary>The rows' attention of <paramref name="layer"/> in one launch and one merge: query rows (post-RoPE) and
    /// output rows at their places in the step's arrays (and the f16 copy of the output when <paramref name="outputF16"/> is given).</summary>
    public void Attend(int layer, ulong q, ulong output, ulong outputF16)
    {
        var c = Cache!;
        var s = c.Shape;
        int rows = _seqs.Count;
        ulong table = RowsOf(layer);
        var split = new AttentionSplit(_splits, 0);
        if (c.Nuq?[layer] is { } nuq)
            c.Kernels.AttentionNuq(q, nuq, c.Table!, s.KvHeads, s.GroupSize, s.HeadDim, 0, rows, split, s.ScoreScale, _part!.Pointer, output,
                c.Config.SinkTokens, (0, 0), c.Rope, 0, 0, outputF16, table);
        else
            c.Kernels.AttentionF16(q, c.K[layer], c.V[layer], c.MaxTokens, s.KvHeads, s.GroupSize, s.HeadDim, 0, rows, split, s.ScoreScale,
                _part!.Pointer, output, 0, 0, outputF16, table);
    }

    /// <summary>Counts the step's token in every layer of each row's sequence (before the segments' Commit).</summary>
    public void End()
    {
        foreach (var seq in _seqs) seq.EndDecodeStep();
        _seqs.Clear();
        Cache = null;
    }

    /// <summary>Drops the planned rows without counting their token (a step that failed; <see cref="End"/> already
    /// cleared them after one that did not).</summary>
    public void Forget()
    {
        _seqs.Clear();
        Cache = null;
    }

    private ulong RowsOf(int layer) => _table!.Pointer + (ulong)((long)layer * _seqs.Count * RowBytes);

    public void Dispose()
    {
        _table?.Dispose();
        _part?.Dispose();
    }
}
