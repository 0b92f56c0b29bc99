using System.Runtime.Intrinsics;
using Kvq.Cache.Codecs;
using Kvq.Cache.Paging;
using Kvq.Cache.Storage;
using Kvq.Tensors;

namespace Kvq.Cache;

/// <summary>
/// One sequence in a <see cref="PagedKvCache"/>: a list of block ids (shared by all layers) plus, for whole-block
/// codecs, an f16 staging buffer of recent tokens. Keys are rotated before encoding unless the key codec is pre-RoPE,
/// in which case attention rotates decoded keys at their positions.
/// </summary>
public sealed partial class PagedKvSequence : IKvSequence, IKvMemoryReport, IDisposable
{
    private readonly PagedKvCache _cache;
    private readonly KvShape _shape;
    private readonly int _id;                 // sequence id in the cache's bookkeeping
    private TokenSlot[] _slots = new TokenSlot[64];
    private readonly int[] _count;            // per layer: tokens appended
    private readonly Side _keys, _values;
    private readonly float[] _rotated;        // (headDim) scratch for a key being rotated before encoding

    public int Length { get; private set; }
    /// <summary>Physical block ids, in order (shared with the bookkeeping; do not hold across appends).</summary>
    public ReadOnlySpan<int> Blocks => _cache.Sequences.BlockIds(_id);
    public PagedKvCache Cache => _cache;

    internal PagedKvSequence(PagedKvCache cache, ReadOnlySpan<int> prompt)
    {
        _cache = cache;
        _shape = cache.Shape;
        _count = new int[_shape.Layers];
        _rotated = new float[_shape.HeadDim];
        _keys = new Side(cache.KeyCodecs, cache.Keys, _shape, cache.Config.SinkTokens);
        _values = new Side(cache.ValueCodecs, cache.Values, _shape, cache.Config.SinkTokens);
        _id = cache.Sequences.Create(prompt, out int cached);
        _deferRegister = _keys.Staging != null || _values.Staging != null || _keys.Sink != null;
        if (cached > 0 && _keys.Sink != null && !cache.Sinks!.TryRestore(Blocks[0], _keys.Sink, _values.Sink!))
        {
            // The prefix's sink copies are gone (cannot happen while the bank unregisters what it drops): start empty.
            cache.Sequences.Truncate(_id, 0);
            cached = 0;
        }
        _sinkPublished = cached > 0;
        Length = cached;
        Array.Fill(_count, cached);
        // Reused blocks are sealed: a staging format's new tokens stage from here.
        Array.Fill(_keys.Sealed, _keys.Staging != null ? cached : 0);
        Array.Fill(_values.Sealed, _values.Staging != null ? cached : 0);
        _policySlots = CreatePolicySlots();
    }

    // Blocks are registered for prefix sharing only once their content is final: at append for formats that encode
    // each token as it comes; after sealing (and with the sink copies banked) otherwise.
    private readonly bool _deferRegister;
    private bool _sinkPublished;

    /// <summary>Registers the full blocks whose content is final (staging formats: sealed on both sides), first
    /// banking the sink copies beside block 0.</summary>
    private void PublishBlocks()
    {
        int durable = Length;
        if (_keys.Staging != null) foreach (int sealedTokens in _keys.Sealed) durable = Math.Min(durable, sealedTokens);
        if (_values.Staging != null) foreach (int sealedTokens in _values.Sealed) durable = Math.Min(durable, sealedTokens);
        if (durable < Math.Max(_cache.Config.BlockTokens, _cache.Config.SinkTokens)) return;
        if (_keys.Sink != null && !_sinkPublished)
        {
            int dropped = _cache.Sinks!.Put(Blocks[0], _keys.Sink, _values.Sink!);
            if (dropped >= 0) _cache.Sequences.Pool.Unregister(dropped);
            _sinkPublished = true;
        }
        _cache.Sequences.Register(_id, durable);
    }

    private PagedKvSequence(PagedKvSequence parent)
    {
        _cache = parent._cache;
        _shape = parent._shape;
        _count = (int[])parent._count.Clone();
        _rotated = new float[_shape.HeadDim];
        _keys = new Side(_cache.KeyCodecs, _cache.Keys, _shape, _cache.Config.SinkTokens);
        _keys.CopySinkFrom(parent._keys);
        _values = new Side(_cache.ValueCodecs, _cache.Values, _shape, _cache.Config.SinkTokens);
        _values.CopySinkFrom(parent._values);
        _id = _cache.Sequences.Fork(parent._id);
        _deferRegister = parent._deferRegister;
        _sinkPublished = parent._sinkPublished;
        Length = parent.Length;
        _policySlots = CreatePolicySlots();
    }

    /// <summary>A sequence that shares all of this one's tokens (copy-on-write on the partial last block).</summary>
    public PagedKvSequence Fork()
    {
        if (!_cache.SupportsPrefixSharing || _keys.Staging != null || _values.Staging != null)
            throw new KvSpecException($"{_cache.Config.Name}: sequences cannot be forked while a codec keeps recent tokens in staging " +
                                      "or a token policy owns the blocks");
        return new PagedKvSequence(this);
    }

    public void BeginChunk(ReadOnlySpan<int> tokens)
    {
        if (_policySlots != null) { _policySlots.Reserve(_count, tokens.Length, Length); return; }
        if (_slots.Length < tokens.Length) _slots = new TokenSlot[tokens.Length];
        var copy = _cache.Sequences.Append(_id, tokens, _slots, register: !_deferRegister);
        if (copy is { } c) _cache.CopyBlock(c);
    }

    /// <summary>Keys or values: codec, arenas, and staging for whole-block codecs.</summary>
    private sealed class Side
    {
        public readonly KvCodec Codec;              // layer 0 head 0: the layout all share
        public readonly KvCodec[][] Codecs;         // per layer, per head
        public readonly BlockArena[] Arenas;
        public readonly SinkStore? Sink;            // exact f16 copies of the first tokens
        public readonly StagingBuffer[]? Staging;   // per layer
        public readonly int[] Sealed;               // per layer: tokens encoded into blocks (multiple of block size)

        public Side(KvCodec[][] codecs, BlockArena[] arenas, KvShape shape, int sinkTokens)
        {
            Codecs = codecs;
            Codec = codecs[0][0];
            var codec = Codec;
            if (sinkTokens > 0) Sink = new SinkStore(shape.Layers, shape.KvHeads, shape.HeadDim, sinkTokens);
            Arenas = arenas;
            Sealed = new int[shape.Layers];
            if (codec.EncodesWholeBlocks)
            {
                Staging = new StagingBuffer[shape.Layers];
                for (int l = 0; l < shape.Layers; l++)
                    Staging[l] = new StagingBuffer(shape.KvHeads, shape.HeadDim, codec.BlockTokens + codec.ResidualTokens);
            }
        }

        public void CopySinkFrom(Side parent) => Sink?.CopyFrom(parent.Sink!);

        /// <summary>What lives outside blocks: sealed counts, staged tokens, sink copies.</summary>
        public SwappedKv.SideState Save() => new((int[])Sealed.Clone(), Staging?.Select(s => s.Save()).ToArray(), Sink?.Save());

        public void Restore(SwappedKv.SideState state)
        {
            state.Sealed.CopyTo(Sealed, 0);
            if (Staging != null)
                for (int l = 0; l < Staging.Length; l++) Staging[l].Restore(state.Staging![l]);
            if (state.Sink != null) Sink!.Restore(state.Sink);
        }

        /// <summary>Tokens [0, EncodedTokens) are read from blocks, the rest from staging.</summary>
        public int EncodedTokens(int layer, int count) => Staging == null ? count : Sealed[layer];
    }

    public void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n)
    {
        int hd = _shape.HeadDim, bt = _cache.Config.BlockTokens;
        var rope = _shape.Rope;
        Span<float> cos = stackalloc float[rope.RopeDims / 2];
        Span<float> sin = stackalloc float[rope.RopeDims / 2];
        var rotated = _rotated;
        for (int t = 0; t < n; t++)
        {
            int slot = _count[layer];
            int pos = _policySlots == null ? slot : _policySlots.Positions(layer, 0)[slot];
            bool rotate = !_keys.Codec.PreRope;
            if (rotate) rope.Angles(pos, cos, sin);
            for (int h = 0; h < _shape.KvHeads; h++)
            {
                var kh = k.Slice(t * _shape.KvDim + h * hd, hd);
                if (rotate)
                {
                    kh.CopyTo(rotated);
                    rope.Rotate(rotated, cos, sin);
                    Store(_keys, layer, h, slot, pos, rotated);
                }
                else Store(_keys, layer, h, slot, pos, kh);
                Store(_values, layer, h, slot, pos, v.Slice(t * _shape.KvDim + h * hd, hd));
            }
            _count[layer] = slot + 1;
            Seal(_keys, layer);
            Seal(_values, layer);
        }
    }

    private void Store(Side side, int layer, int head, int slot, int pos, ReadOnlySpan<float> x)
    {
        if (side.Sink is { } sink && pos < sink.Tokens) sink.Set(layer, head, pos, x);
        if (side.Staging is { } staging)
            staging[layer].Add(head, pos - side.Sealed[layer], x);
        else
        {
            int bt = _cache.Config.BlockTokens;
            side.Codecs[layer][head].EncodeToken(x, side.Arenas[layer].Block(LayerBlocks(layer)[slot / bt], head), slot % bt);
        }
    }

    /// <summary>Encodes the oldest staged block once it is full and older than the residual window.</summary>
    private void Seal(Side side, int layer)
    {
        if (side.Staging is not { } all) return;
        var staging = all[layer];
        int bt = _cache.Config.BlockTokens, hd = _shape.HeadDim;
        staging.SetCount(_count[layer] - side.Sealed[layer]);
        if (staging.Count < bt + side.Codec.ResidualTokens) return;
        var tile = new float[bt * hd];
        int block = Blocks[side.Sealed[layer] / bt];
        for (int h = 0; h < _shape.KvHeads; h++)
        {
            staging.Read(h, 0, bt, tile);
            side.Codecs[layer][h].EncodeBlock(tile, side.Arenas[layer].Block(block, h));
        }
        staging.DropFront(bt);
        side.Sealed[layer] += bt;
    }

    public void Commit(int n)
    {
        Length += n;
        if (_policySlots != null) ApplyPolicy(n);
        else if (_deferRegister) PublishBlocks();
    }

    public unsafe void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par)
    {
        const int QueryChunk = 16;
        int chunks = (n + QueryChunk - 1) / QueryChunk;
        int bt = _cache.Config.BlockTokens;
        int blocks = (_count[layer] + bt - 1) / bt;
        // Split-K: when there are fewer (head, query-chunk) items than threads (decode, few KV heads), each item's
        // blocks are cut into ranges that threads attend to separately; partial softmax states are merged after.
        int items = _shape.KvHeads * chunks;
        int splits = items >= par.Threads ? 1 : Math.Clamp(par.Threads * 2 / items, 1, Math.Max(1, blocks / 8));
        fixed (float* pq = q)
        fixed (float* po = output)
        {
            var partial = splits > 1 ? new PartialStates(items * splits, _shape.GroupSize * Math.Min(n, QueryChunk), _shape.HeadDim) : null;
            var job = new AttendJob(this, layer, pq, po, n, QueryChunk, chunks, splits, blocks, partial);
            par.For(items * splits, 1, ref job);
            if (partial != null) MergeSplits(partial, items, splits, po, n, QueryChunk, chunks);
        }
        if (_policySlots is { HasAttention: true }) ObserveAttention(layer, q, n);
    }

    /// <summary>Softmax states of block ranges: running max, sum and unnormalised accumulator per query row.</summary>
    private sealed class PartialStates(int states, int rows, int headDim)
    {
        public readonly int Rows = rows;
        public readonly float[] Max = new float[states * rows];
        public readonly float[] Sum = new float[states * rows];
        public readonly float[] Acc = new float[states * rows * headDim];
    }

    private unsafe void MergeSplits(PartialStates p, int items, int splits, float* o, int n, int qChunk, int chunks)
    {
        int hd = _shape.HeadDim, g = _shape.GroupSize;
        var outRow = new float[hd];
        for (int item = 0; item < items; item++)
        {
            int head = item / chunks, c = item % chunks;
            int t0 = c * qChunk, t1 = Math.Min(n, t0 + qChunk);
            for (int r = 0; r < (t1 - t0) * g; r++)
            {
                float mx = float.NegativeInfinity;
                for (int sp = 0; sp < splits; sp++) mx = Math.Max(mx, p.Max[(item * splits + sp) * p.Rows + r]);
                double total = 0;
                Array.Clear(outRow);
                for (int sp = 0; sp < splits; sp++)
                {
                    int st = (item * splits + sp) * p.Rows + r;
                    if (p.Sum[st] == 0f) continue;
                    float f = MathF.Exp(p.Max[st] - mx);
                    total += p.Sum[st] * f;
                    System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(p.Acc.AsSpan(st * hd, hd), f, outRow, outRow);
                }
                int t = t0 + r / g, j = r % g;
                var dst = new Span<float>(o + (long)t * _shape.QDim + (head * g + j) * hd, hd);
                System.Numerics.Tensors.TensorPrimitives.Multiply(outRow, (float)(1 / total), dst);
            }
        }
    }

    private unsafe readonly struct AttendJob(PagedKvSequence s, int layer, float* q, float* o, int n, int qChunk, int chunks,
        int splits, int blocks, PartialStates? partial) : IRangeJob
    {
        public void Run(int start, int end)
        {
            var scratch = AttentionScratch.For(s._shape, s._cache.Config.BlockTokens, qChunk);
            int bt = s._cache.Config.BlockTokens;
            for (int work = start; work < end; work++)
            {
                int item = work / splits, sp = work % splits;
                int head = item / chunks, c = item % chunks;
                int t0 = c * qChunk, t1 = Math.Min(n, t0 + qChunk);
                int b0 = (int)((long)blocks * sp / splits), b1 = (int)((long)blocks * (sp + 1) / splits);
                s.AttendHead(layer, head, q, o, n, t0, t1, b0 * bt, b1 * bt, scratch, partial, work);
            }
        }
    }

    /// <summary>Online-softmax attention of query tokens [t0, t1) of the batch, for the query heads of one KV head,
    /// over stored tokens [sBegin, sEnd) (block-aligned). Writes the normalised output, or with
    /// <paramref name="partial"/> the unnormalised state number <paramref name="state"/> for a later merge.</summary>
    private unsafe void AttendHead(int layer, int head, float* q, float* o, int n, int t0, int t1, int sBegin, int sEnd,
        AttentionScratch sc, PartialStates? partial, int state)
    {
        int hd = _shape.HeadDim, g = _shape.GroupSize, bt = _cache.Config.BlockTokens;
        int count = _count[layer];
        int nq = (t1 - t0) * g;
        float scale = _shape.ScoreScale;
        // Gather the group's query rows (token-major), pre-scaled.
        for (int t = t0; t < t1; t++)
            for (int j = 0; j < g; j++)
            {
                var src = new ReadOnlySpan<float>(q + (long)t * _shape.QDim + (head * g + j) * hd, hd);
                System.Numerics.Tensors.TensorPrimitives.Multiply(src, scale, sc.Q.AsSpan(((t - t0) * g + j) * hd, hd));
            }
        var qs = sc.Q.AsSpan(0, nq * hd);
        var acc = sc.Acc.AsSpan(0, nq * hd);
        acc.Clear();
        var m = sc.Max.AsSpan(0, nq);
        var l = sc.Sum.AsSpan(0, nq);
        m.Fill(float.NegativeInfinity);
        l.Clear();
        int lastVisible = count - n + t1; // tokens the last query of this chunk sees
        var blocks = LayerBlocks(layer);
        int keysEncoded = _keys.EncodedTokens(layer, count), valuesEncoded = _values.EncodedTokens(layer, count);
        for (int s0 = sBegin; s0 < Math.Min(lastVisible, sEnd); s0 += bt)
        {
            int cnt = Math.Min(bt, lastVisible - s0);
            var scores = sc.Scores.AsSpan(0, nq * cnt);
            int block = blocks[s0 / bt];
            // Keys -> scores.
            bool sinkTile = s0 == 0 && _keys.Sink != null;
            if (s0 < keysEncoded && !sinkTile)
            {
                var kb = _keys.Arenas[layer].Block(block, head);
                if (_keys.Codec.PreRope)
                    _keys.Codecs[layer][head].ScoresPreRope(kb, cnt, Positions(layer, head, s0, cnt), _shape.Rope, qs, nq, scores, sc.Tile);
                else _keys.Codecs[layer][head].Scores(kb, cnt, qs, nq, scores, sc.Tile);
            }
            else
            {
                var tile = sc.Tile.AsSpan(0, cnt * hd);
                if (s0 < keysEncoded) _keys.Codecs[layer][head].DecodeBlock(_keys.Arenas[layer].Block(block, head), cnt, tile);
                else _keys.Staging![layer].Read(head, s0 - _keys.Sealed[layer], cnt, tile);
                if (sinkTile) _keys.Sink!.Overwrite(layer, head, tile, cnt);
                if (_keys.Codec.PreRope) _shape.Rope.RotateAt(tile, cnt, Positions(layer, head, s0, cnt));
                Attention.TileMath.Scores(tile, cnt, hd, qs, nq, scores);
            }
            if (_policySlots is { HasLogWeights: true }) AddLogWeights(layer, head, s0, cnt, scores, nq);
            // Causal mask + online softmax: rescale what was accumulated when the running max grows.
            for (int r = 0; r < nq; r++)
            {
                int visible = count - n + t0 + r / g + 1;
                var row = scores.Slice(r * cnt, cnt);
                int valid = Math.Clamp(visible - s0, 0, cnt);
                row[valid..].Clear();
                if (valid == 0) continue;
                var live = row[..valid];
                // Vectorised exp over the row (a scalar MathF.Exp per score was ~20% of prefill).
                float mx, sum;
                if (valid == 32 && Vector512.IsHardwareAccelerated) ExpRow32(live, m[r], out mx, out sum);
                else
                {
                    mx = Math.Max(m[r], System.Numerics.Tensors.TensorPrimitives.Max(live));
                    System.Numerics.Tensors.TensorPrimitives.Subtract(live, mx, live);
                    System.Numerics.Tensors.TensorPrimitives.Exp(live, live);
                    sum = System.Numerics.Tensors.TensorPrimitives.Sum(live);
                }
                float corr = float.IsNegativeInfinity(m[r]) ? 0f : MathF.Exp(m[r] - mx);
                if (corr != 1f) System.Numerics.Tensors.TensorPrimitives.Multiply(acc.Slice(r * hd, hd), corr, acc.Slice(r * hd, hd));
                l[r] = l[r] * corr + sum;
                m[r] = mx;
            }
            // Values: acc += w x V.
            bool valueSinkTile = s0 == 0 && _values.Sink != null;
            if (s0 < valuesEncoded && !valueSinkTile)
                _values.Codecs[layer][head].Accumulate(_values.Arenas[layer].Block(block, head), cnt, scores, nq, acc, sc.Tile);
            else
            {
                var tile = sc.Tile.AsSpan(0, cnt * hd);
                if (s0 < valuesEncoded) _values.Codecs[layer][head].DecodeBlock(_values.Arenas[layer].Block(block, head), cnt, tile);
                else _values.Staging![layer].Read(head, s0 - _values.Sealed[layer], cnt, tile);
                if (valueSinkTile) _values.Sink!.Overwrite(layer, head, tile, cnt);
                Attention.TileMath.Accumulate(tile, cnt, hd, scores, nq, acc);
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
            var dst = new Span<float>(o + (long)t * _shape.QDim + (head * g + j) * hd, hd);
            System.Numerics.Tensors.TensorPrimitives.Multiply(acc.Slice(r * hd, hd), 1f / l[r], dst);
        }
    }

    /// <summary>The RoPE positions of stored slots [slot0, slot0+count) of one layer and KV head: the slot index
    /// without a policy; with one (evicted or merged tokens), the positions <see cref="Policies.PolicySlots"/> keeps.</summary>
    private ReadOnlySpan<int> Positions(int layer, int head, int slot0, int count) => _policySlots == null
        ? IdentityPositions.Span(slot0 + count).Slice(slot0, count)
        : _policySlots.Positions(layer, head).Slice(slot0, count);

    /// <summary>A full 32-score row in two registers: new running max, exp(x - max) in place, and the row sum
    /// (the common case of the softmax update, without five library calls per row).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void ExpRow32(Span<float> row, float runningMax, out float mx, out float sum)
    {
        var a = Vector512.Create((ReadOnlySpan<float>)row[..16]);
        var b = Vector512.Create((ReadOnlySpan<float>)row[16..32]);
        mx = Math.Max(runningMax, MaxOf(Vector512.Max(a, b)));
        var vm = Vector512.Create(mx);
        a = Vector512.Exp(a - vm);
        b = Vector512.Exp(b - vm);
        a.CopyTo(row);
        b.CopyTo(row[16..]);
        sum = Vector512.Sum(a + b);
    }

    private static float MaxOf(Vector512<float> v)
    {
        var m = Vector256.Max(v.GetLower(), v.GetUpper());
        var m2 = Vector128.Max(m.GetLower(), m.GetUpper());
        m2 = Vector128.Max(m2, Vector128.Shuffle(m2, Vector128.Create(2, 3, 0, 1)));
        m2 = Vector128.Max(m2, Vector128.Shuffle(m2, Vector128.Create(1, 0, 3, 2)));
        return m2.ToScalar();
    }

    /// <summary>Exact bytes this sequence holds: its blocks in every layer and head (shared ones included), plus staging.</summary>
    public KvMemory Memory()
    {
        // Without a policy every layer uses the sequence's blocks; with one, each layer holds its own. Layers may
        // differ in block layout (KVQuant :mixed widths).
        KvBytes keys = default, values = default;
        for (int l = 0; l < _shape.Layers; l++)
        {
            var (k, v) = _cache.Plan.LayerBlockBytes(l, _policySlots?.Blocks(l).Length ?? Blocks.Length);
            keys += k;
            values += v;
        }
        long staging = 0;
        foreach (var side in new[] { _keys, _values })
        {
            if (side.Staging != null) foreach (var s in side.Staging) staging += s.AllocatedBytes;
            if (side.Sink != null) staging += side.Sink.AllocatedBytes;
        }
        return new KvMemory(keys, values, staging, Length, _shape.Layers * _shape.KvDim);
    }

    /// <summary>
    /// Copies this sequence's stored KV (its blocks' encoded bytes, staging, sink copies, token ids) to host memory
    /// and releases its blocks: preemption by swapping, where the compressed bytes are a cheap copy. The sequence is
    /// disposed; <see cref="SwapIn"/> makes an identical one.
    /// </summary>
    public SwappedKv SwapOut()
    {
        if (_policySlots != null) throw new KvSpecException($"{_cache.Config.Name}: a sequence under a token policy cannot be swapped");
        if (_count.Any(c => c != Length)) throw new InvalidOperationException("swap out between chunks only (every layer at the same length)");
        var blocks = Blocks.ToArray();
        var keys = new byte[_shape.Layers][];
        var values = new byte[_shape.Layers][];
        for (int l = 0; l < _shape.Layers; l++)
        {
            keys[l] = CopyBlocks(_cache.Keys[l], blocks);
            values[l] = CopyBlocks(_cache.Values[l], blocks);
        }
        var swapped = new SwappedKv(_cache.Sequences.TokenIds(_id).ToArray(), Length, keys, values, _keys.Save(), _values.Save());
        Dispose();
        return swapped;
    }

    /// <summary>A sequence in <paramref name="cache"/> (the one it was swapped out of, or one of the same shape and
    /// formats) holding exactly what <paramref name="swapped"/> held, in freshly allocated blocks.</summary>
    /// <exception cref="Paging.KvCacheFullException">Not enough free blocks; nothing changed.</exception>
    public static PagedKvSequence SwapIn(PagedKvCache cache, SwappedKv swapped)
    {
        var seq = new PagedKvSequence(cache, default);
        try
        {
            var slots = new TokenSlot[swapped.Tokens.Length];
            cache.Sequences.Append(seq._id, swapped.Tokens, slots, register: !seq._deferRegister);
            var blocks = seq.Blocks.ToArray();
            for (int l = 0; l < seq._shape.Layers; l++)
            {
                RestoreBlocks(cache.Keys[l], blocks, swapped.Keys[l]);
                RestoreBlocks(cache.Values[l], blocks, swapped.Values[l]);
            }
            seq._keys.Restore(swapped.KeyState);
            seq._values.Restore(swapped.ValueState);
            Array.Fill(seq._count, swapped.Length);
            seq.Length = swapped.Length;
            if (seq._deferRegister) seq.PublishBlocks();
            return seq;
        }
        catch
        {
            seq.Dispose();
            throw;
        }
    }

    private byte[] CopyBlocks(Storage.BlockArena arena, int[] blocks)
    {
        int bb = arena.BlockBytes, heads = _shape.KvHeads;
        var bytes = new byte[blocks.Length * heads * bb];
        for (int i = 0; i < blocks.Length; i++)
            for (int h = 0; h < heads; h++)
                arena.Block(blocks[i], h).CopyTo(bytes.AsSpan((i * heads + h) * bb, bb));
        return bytes;
    }

    private static void RestoreBlocks(Storage.BlockArena arena, int[] blocks, byte[] bytes)
    {
        int bb = arena.BlockBytes, heads = bytes.Length / Math.Max(1, blocks.Length * bb);
        for (int i = 0; i < blocks.Length; i++)
            for (int h = 0; h < heads; h++)
                bytes.AsSpan((i * heads + h) * bb, bb).CopyTo(arena.Block(blocks[i], h));
    }

    public SequenceBlockUsage BlockUsage => _cache.Sequences.Usage(_id);

    /// <summary>Fresh blocks an append of <paramref name="tokens"/> tokens would take from the pool (admission and
    /// preemption decisions; a shared partial last block counts, as it is copied first).</summary>
    public int BlocksNeededToAppend(int tokens) => _cache.Sequences.BlocksNeededToAppend(_id, tokens);

    private bool _disposed;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _policySlots?.ReleaseAll();
        _cache.Sequences.Free(_id);
    }
}

/// <summary>Per-thread scratch for attention, reused across calls (no allocation per token).</summary>
internal sealed class AttentionScratch(KvShape shape, int blockTokens, int queryChunk)
{
    [ThreadStatic] private static AttentionScratch? _cached;
    private readonly (int, int, int, int) _key = (shape.GroupSize, shape.HeadDim, blockTokens, queryChunk);

    public static AttentionScratch For(KvShape shape, int blockTokens, int queryChunk)
    {
        var c = _cached;
        if (c == null || c._key != (shape.GroupSize, shape.HeadDim, blockTokens, queryChunk))
            _cached = c = new AttentionScratch(shape, blockTokens, queryChunk);
        return c;
    }

    private readonly int _nq = shape.GroupSize * queryChunk;
    public readonly float[] Q = new float[shape.GroupSize * queryChunk * shape.HeadDim];
    public readonly float[] Acc = new float[shape.GroupSize * queryChunk * shape.HeadDim];
    public readonly float[] Max = new float[shape.GroupSize * queryChunk];
    public readonly float[] Sum = new float[shape.GroupSize * queryChunk];
    public readonly float[] Scores = new float[shape.GroupSize * queryChunk * blockTokens];
    public readonly float[] Tile = new float[blockTokens * shape.HeadDim];
}
