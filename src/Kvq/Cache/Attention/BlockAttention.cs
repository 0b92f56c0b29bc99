using System.Numerics.Tensors;
using System.Runtime.Intrinsics.X86;
using Kvq.Cache.Codecs;
using Kvq.Cache.Storage;
using Kvq.Tensors;

namespace Kvq.Cache.Attention;

/// <summary>
/// Causal attention of a chunk of queries over a sequence's stored tokens, block by block with an online softmax, so
/// only one decoded tile per thread is ever live. Work items are (KV head, chunk of 16 query tokens); when there are
/// fewer items than threads (decode, few KV heads), each item's blocks are cut into ranges attended separately
/// (split-K) and their partial softmax states merged after.
/// </summary>
internal static unsafe class BlockAttention
{
    internal const int QueryChunk = 16;

    /// <summary>How many block ranges (split-K) each of a call's <paramref name="items"/> work items is cut into: a
    /// function of the sequence and the thread count only, never of which thread runs what, so a sequence attended
    /// alone (<see cref="Attend"/>) and within a batch (<see cref="BatchAttention"/>) computes the same states.</summary>
    internal static int SplitsFor(int items, int blocks, int threads) =>
        items >= threads ? 1 : Math.Clamp(threads * 2 / items, 1, Math.Max(1, blocks / 8));

    /// <summary>output (n, qDim) = attention of queries q (n, qDim), the chunk's last token being the layer's last, over
    /// the layer's stored tokens.</summary>
    public static void Attend(IKvBlockReader kv, int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par)
    {
        var shape = kv.Shape;
        int chunks = (n + QueryChunk - 1) / QueryChunk;
        int blocks = (kv.Count(layer) + kv.BlockTokens - 1) / kv.BlockTokens;
        int items = shape.KvHeads * chunks;
        int splits = SplitsFor(items, blocks, par.Threads);
        fixed (float* pq = q)
        fixed (float* po = output)
        {
            var partial = splits > 1 ? PartialStates.For(items * splits, shape.GroupSize * Math.Min(n, QueryChunk), shape.HeadDim) : null;
            var job = new Job(kv, layer, pq, po, n, chunks, splits, 0, blocks, partial);
            par.For(items * splits, 1, ref job);
            if (partial != null) MergeSplits(shape, partial, 0, items, splits, po, n, chunks);
        }
    }

    /// <summary>The unnormalised states of queries q (n, qDim) over blocks [b0, b1) of the layer only (one shard of a
    /// sequence-parallel cache: <see cref="ShardedAttention"/>), with the causal mask and windows of
    /// <see cref="Attend"/>: written to part <paramref name="part"/> of <paramref name="states"/>, row t x heads + query
    /// head; rows that see no key of the range stay empty (max -inf, sum 0).</summary>
    public static void AttendRange(IKvBlockReader kv, int layer, ReadOnlySpan<float> q, int n, int b0, int b1, AttentionStates states, int part,
        Parallelism par)
    {
        var shape = kv.Shape;
        int hd = shape.HeadDim, g = shape.GroupSize;
        if (states.Rows != n * shape.Heads || states.HeadDim != hd || (uint)part >= (uint)states.Parts)
            throw new ArgumentException($"states of {states.Parts} parts x {states.Rows} rows x {states.HeadDim} do not fit part {part} of {n} tokens x {shape.Heads} heads x {hd}", nameof(states));
        int chunks = (n + QueryChunk - 1) / QueryChunk;
        int items = shape.KvHeads * chunks;
        int rows = g * Math.Min(n, QueryChunk);
        var partial = PartialStates.For(items, rows, hd);
        fixed (float* pq = q)
        {
            var job = new Job(kv, layer, pq, null, n, chunks, 1, b0, b1, partial);
            par.For(items, 1, ref job);
        }
        for (int item = 0; item < items; item++)
        {
            int head = item / chunks, c = item % chunks;
            int t0 = c * QueryChunk, t1 = Math.Min(n, t0 + QueryChunk);
            for (int r = 0; r < (t1 - t0) * g; r++)
            {
                int row = (t0 + r / g) * shape.Heads + head * g + r % g;
                int dst = part * states.Rows + row, src = item * rows + r;
                states.Max[dst] = partial.Max[src];
                states.Sum[dst] = partial.Sum[src];
                partial.Acc.AsSpan(src * hd, hd).CopyTo(states.Acc.AsSpan(dst * hd, hd));
            }
        }
    }

    private readonly struct Job(IKvBlockReader kv, int layer, float* q, float* o, int n, int chunks, int splits, int first, int last,
        PartialStates? partial) : IRangeJob
    {
        public void Run(int start, int end)
        {
            var scratch = AttentionScratch.For(kv.Shape, kv.BlockTokens, QueryChunk);
            _ = kv.BlockTokens;
            for (int work = start; work < end; work++)
            {
                int item = work / splits, sp = work % splits;
                int head = item / chunks, c = item % chunks;
                int t0 = c * QueryChunk, t1 = Math.Min(n, t0 + QueryChunk);
                int b0 = first + (int)((long)(last - first) * sp / splits), b1 = first + (int)((long)(last - first) * (sp + 1) / splits);
                Head(kv, layer, head, q, o, n, t0, t1, b0, b1, scratch, partial, work);
            }
        }
    }

    /// <summary>Online-softmax attention of query tokens [t0, t1) of the batch, for the query heads of one KV head,
    /// over the stored tokens of blocks [b0, b1) (offloaded: of those the selector picks for this chunk). Writes the
    /// normalised output, or with <paramref name="partial"/> the unnormalised state number <paramref name="state"/>
    /// for a later merge.</summary>
    internal static void Head(IKvBlockReader kv, int layer, int head, float* q, float* o, int n, int t0, int t1, int b0, int b1,
        AttentionScratch sc, PartialStates? partial, int state)
    {
        var shape = kv.Shape;
        int hd = shape.HeadDim, g = shape.GroupSize, bt = kv.BlockTokens;
        int count = kv.Count(layer);
        int nq = (t1 - t0) * g;
        var qs = sc.Q.AsSpan(0, nq * hd);
        KeyScores.GatherQueries(shape, new ReadOnlySpan<float>(q, n * shape.QDim), head, t0, t1, qs);
        var acc = sc.Acc.AsSpan(0, nq * hd);
        acc.Clear();
        var m = sc.Max.AsSpan(0, nq);
        var l = sc.Sum.AsSpan(0, nq);
        m.Fill(float.NegativeInfinity);
        l.Clear();
        int lastVisible = count - n + t1; // tokens the last query of this chunk sees
        // Sliding window: a query sees only the latest `window` stored tokens up to itself; blocks before the first
        // query's window are skipped whole.
        int window = shape.WindowOf(layer);
        int firstSeen = window > 0 ? Math.Max(0, count - n + t0 + 1 - window) : 0;
        var blocks = kv.Blocks(layer);
        var values = kv.Values;
        // Logical block indices to read, ascending: all of them, or the selector's choice for this chunk. A split reads
        // those in its range [b0, b1) of the layer's blocks, so reading every block splits exactly as without offload.
        ReadOnlySpan<int> order;
        if (kv.Offload is { } selector)
        {
            int visible = (lastVisible + bt - 1) / bt;
            sc.EnsureBlocks(visible);
            order = sc.Chosen.AsSpan(0, selector.Select(layer, head, qs, nq, count - n + t0 + 1, lastVisible, sc.Chosen, sc.Bounds, sc.Order));
        }
        else order = IdentityPositions.Span(b1);
        bool selectorOff = kv.Offload == null;
        var keyArena = kv.Keys.Arenas[layer];
        var valueArena = values.Arenas[layer];
        bool prefetchRows = PrefetchOutlierRows && selectorOff && (keyArena.HasOutliers || valueArena.HasOutliers);
        bool prefetched = false;
        foreach (int bi in order)
        {
            if (bi < b0 || bi < firstSeen / bt) continue;
            int s0 = bi * bt;
            if (bi >= b1 || s0 >= lastVisible) break;
            int cnt = Math.Min(bt, lastVisible - s0);
            var scores = sc.Scores.AsSpan(0, nq * cnt);
            int block = blocks[s0 / bt];
            if (PrefetchNextBlock && selectorOff)
            {
                // The first block read asks for the next PrefetchBlocks blocks, each later one for the block that many
                // ahead (the nearer ones were asked for already).
                int ahead = PrefetchBlocks;
                for (int a = prefetched ? ahead : 1; a <= ahead && bi + a < b1 && s0 + a * bt < lastVisible; a++)
                    Prefetch(kv, layer, head, s0 + a * bt, blocks[bi + a]);
                prefetched = true;
            }
            if (prefetchRows) PrefetchOutliers(keyArena, valueArena, head, blocks, bi, b1, bt, lastVisible);
            KeyScores.Block(kv, layer, head, s0, cnt, block, qs, nq, scores, sc.Tile);
            // Causal mask + online softmax.
            for (int r = 0; r < nq; r++)
            {
                int visible = count - n + t0 + r / g + 1;
                var row = scores.Slice(r * cnt, cnt);
                int valid = Math.Clamp(visible - s0, 0, cnt);
                int from = window > 0 ? Math.Clamp(visible - window - s0, 0, valid) : 0;
                row[valid..].Clear();
                row[..from].Clear();
                if (valid > from) OnlineSoftmax.Update(row[from..valid], ref m[r], ref l[r], acc.Slice(r * hd, hd));
            }
            // Values: acc += w x V.
            if (values.IsEncodedTile(layer, s0))
                values.Codecs[layer][head].Accumulate(values.Block(layer, block, head), values.Outliers(layer, block, head), cnt, scores, nq,
                    acc, sc.Tile);
            else if (values.IsEncodedUnderSink(layer, s0) && nq * Math.Min(values.Sink!.Tokens, cnt) <= MaxSinkWeights)
                AccumulateUnderSink(values, layer, head, block, cnt, hd, scores, nq, acc, sc.Tile);
            else
            {
                var tile = sc.Tile.AsSpan(0, cnt * hd);
                values.ReadTile(layer, head, s0, cnt, block, tile);
                TileMath.Accumulate(tile, cnt, hd, scores, nq, acc);
            }
        }
        if (partial != null)
        {
            m.CopyTo(partial.Max.AsSpan(state * partial.Rows, nq));
            l.CopyTo(partial.Sum.AsSpan(state * partial.Rows, nq));
            acc.CopyTo(partial.Acc.AsSpan(state * partial.Rows * hd, nq * hd));
            return;
        }
        for (int r = 0; r < nq; r++)
        {
            int t = t0 + r / g, j = r % g;
            var dst = new Span<float>(o + (long)t * shape.QDim + (head * g + j) * hd, hd);
            TensorPrimitives.Multiply(acc.Slice(r * hd, hd), 1f / l[r], dst);
        }
    }

    /// <summary>Most sink weights (query rows x sink rows) <see cref="AccumulateUnderSink"/> sets aside on the stack.</summary>
    private const int MaxSinkWeights = 256;

    /// <summary>acc += w x V over block 0 under sink rows through the codec's fused kernel: the sink rows' weights are
    /// set aside and zeroed (their decoded rows then add exactly 0), and the exact rows added with them after.</summary>
    private static void AccumulateUnderSink(KvSideStore values, int layer, int head, int block, int cnt, int hd, Span<float> w, int nq,
        Span<float> acc, float[] tile)
    {
        int n = Math.Min(values.Sink!.Tokens, cnt);
        Span<float> kept = stackalloc float[nq * n];
        for (int r = 0; r < nq; r++)
            for (int j = 0; j < n; j++)
            {
                kept[r * n + j] = w[r * cnt + j];
                w[r * cnt + j] = 0f;
            }
        values.Codecs[layer][head].Accumulate(values.Block(layer, block, head), values.Outliers(layer, block, head), cnt, w, nq, acc, tile);
        var rows = tile.AsSpan(0, n * hd);
        values.Sink.Overwrite(layer, head, rows, n);
        for (int r = 0; r < nq; r++)
            for (int j = 0; j < n; j++)
                if (kept[r * n + j] != 0f)
                    TensorPrimitives.MultiplyAdd(rows.Slice(j * hd, hd), kept[r * n + j], acc.Slice(r * hd, hd), acc.Slice(r * hd, hd));
    }

    /// <summary>Whether <see cref="Head"/> asks for the next block's keys and values while it works on the current one
    /// (a switch for the benchmarks' A/B only: <c>bench/Kvq.Micro --batch-profile</c>; results do not depend on it).</summary>
    internal static bool PrefetchNextBlock = true;

    /// <summary>How many blocks ahead <see cref="Head"/> asks for keys and values (1: the next block only, as branch
    /// serving did). In a batched step the KV blocks of 16 sequences stream beside the weights, and one block of one
    /// KV head is ~0.4-1.3 us of work for 8 KB of f16: two blocks ahead gave the step -4..5% CPU with the weight rows
    /// also two ahead, -1% with only the rows (branch batch14b, load ~45; attention alone moved within noise). Results
    /// do not depend on it (<c>bench/Kvq.Micro --batch-profile</c>, <c>KVQ_AB=prefetch</c> with <c>KVQ_PF_KV</c>).</summary>
    internal static int PrefetchBlocks = 2;

    /// <summary>Prefetches (into L2) the encoded key and value bytes of one KV head in block <paramref name="blockId"/>.
    /// A sequence's blocks lie wherever the pool put them, so the hardware prefetcher, which follows addresses within
    /// a page, cannot run ahead across blocks: at short contexts with many sequences (a batched decode step reads
    /// 16 x 2 MB of KV for books-19m at 512 tokens) each block's first lines came from memory on demand.</summary>
    private static void Prefetch(IKvBlockReader kv, int layer, int head, int s0, int blockId)
    {
        if (!Sse.IsSupported) return;
        var keys = kv.Keys;
        if (keys.IsEncodedTile(layer, s0)) Touch(keys.Block(layer, blockId, head));
        var values = kv.Values;
        if (values.IsEncodedTile(layer, s0)) Touch(values.Block(layer, blockId, head));
    }

    /// <summary>Whether <see cref="Head"/> prefetches the sparse outlier rows of the next blocks (a switch for the
    /// benchmarks' A/B only: <c>bench/Kvq.Micro --decode-profile</c> with a <c>KV@base</c> entry; results do not
    /// depend on it).</summary>
    internal static bool PrefetchOutlierRows = true;

    /// <summary>Prefetches the sparse rows of the blocks after <paramref name="bi"/> (keys and values, this head): the
    /// rows object of block bi + 2, then the packed bytes of block bi + 1 (whose object the previous block asked
    /// for). Each block's rows are two small heap objects found by pointer (the list, then its byte array); a decode
    /// token streams all its weights between two visits of a layer, so both were cache misses on every block, which the
    /// hardware prefetcher cannot follow (profile: ~7% of a nuq4-1% decode token at 4000 tokens in the loads that
    /// first touch them).</summary>
    private static void PrefetchOutliers(BlockArena keys, BlockArena values, int head, ReadOnlySpan<int> blocks, int bi, int b1, int bt,
        int lastVisible)
    {
        if (bi + 1 < b1 && (bi + 1) * bt < lastVisible)
        {
            keys.PeekOutliers(blocks[bi + 1], head)?.PrefetchRows();
            values.PeekOutliers(blocks[bi + 1], head)?.PrefetchRows();
        }
        if (bi + 2 < b1 && (bi + 2) * bt < lastVisible)
        {
            if (keys.PeekOutliers(blocks[bi + 2], head) is { } k) BlockOutliers.PrefetchObject(k);
            if (values.PeekOutliers(blocks[bi + 2], head) is { } v) BlockOutliers.PrefetchObject(v);
        }
    }

    private static void Touch(Span<byte> bytes)
    {
        fixed (byte* p = bytes)
            if (NonTemporalKv)
                for (int i = 0; i < bytes.Length; i += 64) Sse.PrefetchNonTemporal(p + i);
            else
                for (int i = 0; i < bytes.Length; i += 64) Sse.Prefetch1(p + i);
    }

    /// <summary>Whether <see cref="Prefetch"/> asks for KV blocks with the non-temporal hint (prefetchnta) instead of
    /// into L2: a decode step reads each block once, and 16 sequences' blocks at 512 tokens (33.5 MB of f16 for
    /// books-19m) pass through a 32 MB L3 that could otherwise keep the 31.5 MB of weights the same step reads again
    /// next step. Off: measured worse (attention +32% CPU at 16 sequences, 1 thread, load ~40; branch batch14b), as
    /// a line prefetched two blocks ahead without the hint into L2 is not always in L1 by its turn. Kept for a quiet
    /// re-measure (<c>bench/Kvq.Micro --batch-profile</c>, <c>KVQ_AB=nta</c>); results do not depend on it.</summary>
    internal static bool NonTemporalKv;

    /// <summary>Merges the split states of one call (states <paramref name="state0"/> on, item-major) into o (n, qDim).</summary>
    internal static void MergeSplits(KvShape shape, PartialStates p, int state0, int items, int splits, float* o, int n, int chunks)
    {
        int hd = shape.HeadDim, g = shape.GroupSize;
        Span<float> outRow = hd <= 1024 ? stackalloc float[hd] : new float[hd];
        for (int item = 0; item < items; item++)
        {
            int head = item / chunks, c = item % chunks;
            int t0 = c * QueryChunk, t1 = Math.Min(n, t0 + QueryChunk);
            for (int r = 0; r < (t1 - t0) * g; r++)
            {
                float mx = float.NegativeInfinity;
                for (int sp = 0; sp < splits; sp++) mx = Math.Max(mx, p.Max[(state0 + item * splits + sp) * p.Rows + r]);
                double total = 0;
                outRow.Clear();
                for (int sp = 0; sp < splits; sp++)
                {
                    int st = (state0 + item * splits + sp) * p.Rows + r;
                    if (p.Sum[st] == 0f) continue;
                    float f = MathF.Exp(p.Max[st] - mx);
                    total += p.Sum[st] * f;
                    TensorPrimitives.MultiplyAdd(p.Acc.AsSpan(st * hd, hd), f, outRow, outRow);
                }
                int t = t0 + r / g, j = r % g;
                var dst = new Span<float>(o + (long)t * shape.QDim + (head * g + j) * hd, hd);
                TensorPrimitives.Multiply(outRow, (float)(1 / total), dst);
            }
        }
    }
}
