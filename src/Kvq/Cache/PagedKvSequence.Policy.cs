using Kvq.Cache.Policies;

namespace Kvq.Cache;

/// <summary>
/// The token-policy side of a sequence (<see cref="KvCacheConfig.Policy"/>): per-layer blocks and per-slot positions
/// (<see cref="PolicySlots"/>), the attention statistics a policy asks for, log-weights of merged slots, and the step
/// after each committed chunk that selects, merges, compacts and frees blocks. Without a policy none of it runs.
/// </summary>
public sealed partial class PagedKvSequence
{
    private readonly PolicySlots? _policySlots;
    private PolicyRuntime? _runtime;
    private int _lastChunk;

    private PolicySlots? CreatePolicySlots()
    {
        if (_cache.Config.Policy is not { } cfg) return null;
        var p = cfg.Policy;
        return new PolicySlots(_cache.LayerPools!, _shape.KvHeads, _cache.Config.BlockTokens, p.Merges, p.ObservedQueries > 0);
    }

    /// <summary>Block ids of a layer: the sequence's (shared by all layers) without a policy, the layer's own with one.</summary>
    private ReadOnlySpan<int> LayerBlocks(int layer) => _policySlots != null ? _policySlots.Blocks(layer) : Blocks;

    /// <summary>Tokens each layer holds (slots), for tests and reports; equals Length without a policy.</summary>
    public int SlotCount(int layer) => _count[layer];

    /// <summary>Token positions held by a layer and KV head, in slot order.</summary>
    public ReadOnlySpan<int> SlotPositions(int layer, int head) => _policySlots != null
        ? _policySlots.Positions(layer, head)[.._count[layer]]
        : IdentityPositions.Span(_count[layer]);

    /// <summary>ln(tokens a slot stands for) per slot (merging policies); empty when slots are never merged.</summary>
    public ReadOnlySpan<float> SlotLogWeights(int layer, int head) => _policySlots is { HasLogWeights: true }
        ? _policySlots.LogWeights(layer, head)[.._count[layer]] : default;

    /// <summary>Attention statistics per slot (policies that read attention); empty otherwise.</summary>
    public ReadOnlySpan<float> SlotAttention(int layer, int head) => _policySlots is { HasAttention: true }
        ? _policySlots.Attention(layer, head)[.._count[layer]] : default;

    /// <summary>Scores of merged slots get + ln(weight): a slot standing for w tokens draws their attention.</summary>
    private void AddLogWeights(int layer, int head, int s0, int cnt, Span<float> scores, int nq)
    {
        var w = _policySlots!.LogWeights(layer, head).Slice(s0, cnt);
        for (int r = 0; r < nq; r++)
            System.Numerics.Tensors.TensorPrimitives.Add(scores.Slice(r * cnt, cnt), w, scores.Slice(r * cnt, cnt));
    }

    /// <summary>Raw scores (scaled q . k, plus log-weights) of nq query rows against slots [s0, s0+cnt) of one head,
    /// (nq, cnt) row-major; the same codec paths attention uses.</summary>
    private void SlotScores(int layer, int head, int s0, int cnt, ReadOnlySpan<float> qs, int nq, Span<float> scores, float[] tile)
    {
        int bt = _cache.Config.BlockTokens, hd = _shape.HeadDim;
        int block = LayerBlocks(layer)[s0 / bt];
        var kb = _keys.Arenas[layer].Block(block, head);
        var codec = _keys.Codecs[layer][head];
        if (s0 == 0 && _keys.Sink != null)
        {
            var t = tile.AsSpan(0, cnt * hd);
            codec.DecodeBlock(kb, cnt, t);
            _keys.Sink.Overwrite(layer, head, t, cnt);
            if (codec.PreRope) _shape.Rope.RotateAt(t, cnt, Positions(layer, head, s0, cnt));
            Attention.TileMath.Scores(t, cnt, hd, qs, nq, scores);
        }
        else if (codec.PreRope) codec.ScoresPreRope(kb, cnt, Positions(layer, head, s0, cnt), _shape.Rope, qs, nq, scores, tile);
        else codec.Scores(kb, cnt, qs, nq, scores, tile);
        if (_policySlots!.HasLogWeights) AddLogWeights(layer, head, s0, cnt, scores, nq);
    }

    /// <summary>
    /// Attention probabilities of the chunk's last <see cref="KvPolicy.ObservedQueries"/> queries over this layer's slots,
    /// summed over each KV head's query heads and added to the slots' statistics (reset first unless the policy
    /// accumulates). Online softmax keeps no normalised probabilities, so this is a second pass over the scores only
    /// (no values), normalised with each row's own max and sum.
    /// </summary>
    private unsafe void ObserveAttention(int layer, ReadOnlySpan<float> q, int n)
    {
        var policy = _cache.Config.Policy!.Policy;
        var slots = _policySlots!;
        int obs = Math.Min(n, policy.ObservedQueries);
        int count = _count[layer], hd = _shape.HeadDim, g = _shape.GroupSize, bt = _cache.Config.BlockTokens;
        const int QueryChunk = 16;
        var rt = Runtime;
        rt.EnsureObserve(QueryChunk * g, count, bt, hd);
        for (int head = 0; head < _shape.KvHeads; head++)
        {
            var att = slots.Attention(layer, head)[..count];
            if (!policy.AccumulatesAttention) att.Clear();
            for (int t0 = n - obs; t0 < n; t0 += QueryChunk)
            {
                int t1 = Math.Min(n, t0 + QueryChunk), nq = (t1 - t0) * g;
                var qs = rt.Q.AsSpan(0, nq * hd);
                for (int t = t0; t < t1; t++)
                    for (int j = 0; j < g; j++)
                        System.Numerics.Tensors.TensorPrimitives.Multiply(q.Slice(t * _shape.QDim + (head * g + j) * hd, hd), _shape.ScoreScale,
                            qs.Slice(((t - t0) * g + j) * hd, hd));
                var rows = rt.Rows.AsSpan(0, nq * count);
                for (int s0 = 0; s0 < count; s0 += bt)
                {
                    int cnt = Math.Min(bt, count - s0);
                    var block = rt.BlockScores.AsSpan(0, nq * cnt);
                    SlotScores(layer, head, s0, cnt, qs, nq, block, rt.Tile);
                    for (int r = 0; r < nq; r++) block.Slice(r * cnt, cnt).CopyTo(rows.Slice(r * count + s0, cnt));
                }
                for (int r = 0; r < nq; r++)
                {
                    int visible = count - n + t0 + r / g + 1;
                    var row = rows.Slice(r * count, visible);
                    float mx = System.Numerics.Tensors.TensorPrimitives.Max(row);
                    System.Numerics.Tensors.TensorPrimitives.Subtract(row, mx, row);
                    System.Numerics.Tensors.TensorPrimitives.Exp(row, row);
                    float inv = 1f / System.Numerics.Tensors.TensorPrimitives.Sum(row);
                    System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(row, inv, att[..visible], att[..visible]);
                }
            }
        }
    }

    private PolicyRuntime Runtime => _runtime ??= new PolicyRuntime(this);

    /// <summary>
    /// After a committed chunk: every layer holding more slots than its budget keeps the policy's choice. Per layer,
    /// the policy selects (per KV head, or once for all heads in layer scope), may merge evicted slots into kept ones,
    /// then kept slots are moved down in order (bytes by <see cref="Codecs.KvCodec.CopySlot"/>, bookkeeping alike) and
    /// emptied blocks go back to the layer's pool.
    /// </summary>
    private void ApplyPolicy(int n)
    {
        _lastChunk = n;
        var cfg = _cache.Config.Policy!;
        var policy = cfg.Policy;
        var rt = Runtime;
        int average = cfg.Budget.Tokens(Length);
        for (int layer = 0; layer < _shape.Layers; layer++)
        {
            int count = _count[layer];
            int keep = Math.Max(policy.LayerBudget(layer, _shape.Layers, average), rt.Sinks(layer, -1) + 1);
            if (count <= keep) continue;
            rt.BeginLayer(layer, keep);
            var kept = rt.Kept(count);
            if (cfg.Budget.Scope == BudgetScope.Layer)
            {
                policy.Select(rt, layer, -1, keep, kept);
                for (int head = 0; head < _shape.KvHeads; head++) EvictHead(policy, rt, layer, head, kept);
            }
            else
                for (int head = 0; head < _shape.KvHeads; head++)
                {
                    policy.Select(rt, layer, head, keep, kept);
                    EvictHead(policy, rt, layer, head, kept);
                }
            _count[layer] = keep;
            _policySlots!.Shrink(layer, keep);
        }
    }

    private void EvictHead(KvPolicy policy, PolicyRuntime rt, int layer, int head, ReadOnlySpan<bool> kept)
    {
        int count = _count[layer], kept0 = 0;
        for (int s = 0; s < count; s++) if (kept[s]) kept0++;
        if (kept0 != rt.KeepOf(layer))
            throw new InvalidOperationException($"policy '{policy.Name}' kept {kept0} slots of layer {layer} head {head}, not {rt.KeepOf(layer)}");
        for (int s = 0; s < rt.Sinks(layer, head); s++)
            if (!kept[s]) throw new InvalidOperationException($"policy '{policy.Name}' evicted sink slot {s} of layer {layer} head {head}");
        if (policy.Merges) policy.BeforeEviction(rt, layer, head, kept);
        int bt = _cache.Config.BlockTokens, w = 0;
        var blocks = LayerBlocks(layer);
        for (int s = 0; s < count; s++)
        {
            if (!kept[s]) continue;
            if (s != w)
            {
                MoveSlot(_keys, layer, head, blocks, s, w);
                MoveSlot(_values, layer, head, blocks, s, w);
                _policySlots!.Move(layer, head, s, w);
            }
            w++;
        }
    }

    private void MoveSlot(Side side, int layer, int head, ReadOnlySpan<int> blocks, int from, int to)
    {
        int bt = _cache.Config.BlockTokens;
        var arena = side.Arenas[layer];
        side.Codecs[layer][head].CopySlot(arena.Block(blocks[from / bt], head), from % bt, arena.Block(blocks[to / bt], head), to % bt);
    }

    /// <summary>What policies see and edit: this sequence's slots, through <see cref="IPolicyEditor"/>; also the scratch
    /// reused by every selection and attention pass (no allocation per decode step once grown).</summary>
    private sealed class PolicyRuntime(PagedKvSequence s) : IPolicyEditor
    {
        private readonly int[] _keep = new int[s._shape.Layers];
        private bool[] _kept = [];
        private float[] _scratch = [], _scratch2 = [], _zeros = [], _keys = [], _values = [];
        public float[] Q = [], Rows = [], BlockScores = [], Tile = [];

        public int Layers => s._shape.Layers;
        public int KvHeads => s._shape.KvHeads;
        public int HeadDim => s._shape.HeadDim;
        public int Length => s.Length;
        public int ChunkTokens => s._lastChunk;
        public bool KeysPreRope => s._keys.Codec.PreRope;
        public int Count(int layer) => s._count[layer];
        public int Keep(int layer) => _keep[layer];
        public int KeepOf(int layer) => _keep[layer];

        public int Sinks(int layer, int head) =>
            Math.Min(s._count[layer], Math.Max(s._cache.Config.SinkTokens, s._cache.Config.Policy!.Policy.SinkTokens));

        public void BeginLayer(int layer, int keep) => _keep[layer] = keep;

        public Span<bool> Kept(int count)
        {
            if (_kept.Length < count) _kept = new bool[Math.Max(count, _kept.Length * 2)];
            return _kept.AsSpan(0, count);
        }

        public ReadOnlySpan<int> Positions(int layer, int head) => s._policySlots!.Positions(layer, Math.Max(0, head))[..s._count[layer]];

        public ReadOnlySpan<float> Attention(int layer, int head) => s._policySlots!.HasAttention
            ? s._policySlots.Attention(layer, Math.Max(0, head))[..s._count[layer]] : Zeros(layer);

        public ReadOnlySpan<float> LogWeights(int layer, int head) => s._policySlots!.HasLogWeights
            ? s._policySlots.LogWeights(layer, Math.Max(0, head))[..s._count[layer]] : Zeros(layer);

        public ReadOnlySpan<float> Keys(int layer, int head) => Decode(s._keys, layer, Math.Max(0, head), ref _keys);
        public ReadOnlySpan<float> Values(int layer, int head) => Decode(s._values, layer, Math.Max(0, head), ref _values);

        private readonly float[][] _work = [[], [], [], []];

        public Span<float> Work(int id, int length) => Buffer(ref _work[id], length);
        public Span<float> Scratch(int layer) => Buffer(ref _scratch, s._count[layer]);
        public Span<float> Scratch2(int layer) => Buffer(ref _scratch2, s._count[layer]);

        public void Rewrite(int layer, int head, int slot, ReadOnlySpan<float> key, ReadOnlySpan<float> value, float logWeight, float attention)
        {
            if ((uint)slot >= (uint)s._count[layer]) throw new ArgumentOutOfRangeException(nameof(slot), $"layer {layer} holds {s._count[layer]} slots");
            if (slot < Sinks(layer, head)) throw new InvalidOperationException($"slot {slot} of layer {layer} is a sink and cannot be rewritten");
            int bt = s._cache.Config.BlockTokens;
            int block = s.LayerBlocks(layer)[slot / bt];
            s._keys.Codecs[layer][head].EncodeToken(key, s._keys.Arenas[layer].Block(block, head), slot % bt);
            s._values.Codecs[layer][head].EncodeToken(value, s._values.Arenas[layer].Block(block, head), slot % bt);
            if (s._policySlots!.HasLogWeights) s._policySlots.LogWeights(layer, head)[slot] = logWeight;
            if (s._policySlots.HasAttention) s._policySlots.Attention(layer, head)[slot] = attention;
        }

        public void EnsureObserve(int rows, int count, int bt, int hd)
        {
            Buffer(ref Q, rows * hd);
            Buffer(ref Rows, rows * count);
            Buffer(ref BlockScores, rows * bt);
            Buffer(ref Tile, bt * hd);
        }

        private ReadOnlySpan<float> Zeros(int layer)
        {
            var z = Buffer(ref _zeros, s._count[layer]);
            z.Clear();
            return z;
        }

        /// <summary>Every slot of one head decoded as stored (sink rows from their exact copies).</summary>
        private ReadOnlySpan<float> Decode(Side side, int layer, int head, ref float[] buffer)
        {
            int count = s._count[layer], hd = s._shape.HeadDim, bt = s._cache.Config.BlockTokens;
            var dst = Buffer(ref buffer, count * hd);
            var blocks = s.LayerBlocks(layer);
            for (int s0 = 0; s0 < count; s0 += bt)
            {
                int cnt = Math.Min(bt, count - s0);
                var tile = dst.Slice(s0 * hd, cnt * hd);
                side.Codecs[layer][head].DecodeBlock(side.Arenas[layer].Block(blocks[s0 / bt], head), cnt, tile);
                if (s0 == 0 && side.Sink != null) side.Sink.Overwrite(layer, head, tile, cnt);
            }
            return dst;
        }

        private static Span<float> Buffer(ref float[] a, int n)
        {
            if (a.Length < n) a = new float[Math.Max(n, a.Length * 2)];
            return a.AsSpan(0, n);
        }
    }
}
