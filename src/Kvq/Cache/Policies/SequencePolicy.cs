using System.Numerics.Tensors;
using Kvq.Cache.Attention;
using Kvq.Cache.Paging;
using Kvq.Cache.Storage;

namespace Kvq.Cache.Policies;

/// <summary>
/// The token-policy side of one sequence (<see cref="KvCacheConfig.Policy"/>): per-layer blocks and per-slot positions
/// (<see cref="PolicySlots"/>), the attention statistics a policy asks for, and the step after each committed chunk
/// that selects, merges, compacts and frees blocks. A sequence without a policy has none.
/// </summary>
internal sealed class SequencePolicy
{
    private const int QueryChunk = 16;
    private readonly KvPolicyConfig _config;
    private readonly IKvBlockReader _kv;
    private readonly int[] _count;     // the sequence's slots per layer (shared: compaction shrinks them)
    private PolicyRuntime? _runtime;
    private bool[] _evicts;
    // Prefix sharing (PolicyPrefixes): the tokens and chained block hashes so far, while every chunk had the prefix
    // chunk size (the state is then the one a lone prefill reaches, and worth keeping).
    private readonly PolicyPrefixes? _prefixes;
    private readonly List<int> _tokens = new();
    private readonly List<BlockHash> _hashes = new();
    private bool _aligned;

    public PolicySlots Slots { get; }
    public int SinkTokens { get; }
    public int Length { get; private set; }
    public int LastChunk { get; private set; }

    private SequencePolicy(PagedKvCache cache, KvPolicyConfig config, IKvBlockReader kv, int[] count)
    {
        _config = config;
        _kv = kv;
        _count = count;
        SinkTokens = cache.Config.SinkTokens;
        var p = config.Policy;
        Slots = new PolicySlots(cache.LayerPools!, cache.Shape.KvHeads, cache.Config.BlockTokens, p.Merges, p.ObservedQueries > 0,
            (layer, src, dst) => { cache.Keys[layer].CopyBlock(src, dst); cache.Values[layer].CopyBlock(src, dst); });
        _evicts = new bool[cache.Shape.Layers];
        _prefixes = cache.PolicyPrefixes;
        _aligned = _prefixes != null;
    }

    /// <summary>Starts this new sequence on the longest prefix of <paramref name="prompt"/> (all but its last token at
    /// most) that <see cref="PolicyPrefixes"/> keeps; returns its length in tokens (0: none). counts is set.</summary>
    public int TryAdopt(ReadOnlySpan<int> prompt)
    {
        if (_prefixes == null || prompt.Length < 2) return 0;
        int step = _prefixes.Step, bt = _kv.BlockTokens;
        int max = (prompt.Length - 1) / step * step;
        if (max == 0) return 0;
        var hashes = new BlockHash[max / bt];
        var parent = BlockHash.Root;
        for (int i = 0; i < hashes.Length; i++) parent = hashes[i] = BlockHash.Of(parent, prompt.Slice(i * bt, bt));
        for (int p = max; p > 0; p -= step)
        {
            if (!_prefixes.TryGet(hashes[p / bt - 1], out var snapshot)) continue;
            Slots.Adopt(snapshot);
            snapshot.Counts.CopyTo(_count, 0);
            Length = p;
            LastChunk = _prefixes.ChunkTokens;
            _tokens.AddRange(prompt[..p]);
            _hashes.AddRange(hashes.AsSpan(0, p / bt));
            _prefixes.CountHit();
            return p;
        }
        return 0;
    }

    /// <summary>Takes <paramref name="parent"/>'s state (a fork): its blocks shared, its bookkeeping copied.</summary>
    public void CopyFrom(SequencePolicy parent)
    {
        Slots.CopyFrom(parent.Slots);
        Length = parent.Length;
        LastChunk = parent.LastChunk;
        _aligned = parent._aligned;
        _tokens.AddRange(parent._tokens);
        _hashes.AddRange(parent._hashes);
    }

    /// <summary>The tokens of the chunk about to be appended (kept for prefix hashes while the chunks are aligned).</summary>
    public void BeginChunk(ReadOnlySpan<int> tokens, int length)
    {
        Slots.Reserve(_count, tokens.Length, length);
        if (_aligned) _tokens.AddRange(tokens);
    }

    /// <summary>After a policy step: keeps the state in <see cref="PolicyPrefixes"/> when every chunk so far had the
    /// prefix chunk size and the length is a multiple of <see cref="PolicyPrefixes.Step"/>.</summary>
    private void KeepPrefix(int n, int length)
    {
        if (!_aligned) return;
        if (n != _prefixes!.ChunkTokens || _tokens.Count != length)
        {
            _aligned = false;
            _tokens.Clear();
            _hashes.Clear();
            return;
        }
        if (length % _prefixes.Step != 0) return;
        int bt = _kv.BlockTokens;
        var tokens = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_tokens);
        for (int i = _hashes.Count; i < length / bt; i++)
            _hashes.Add(BlockHash.Of(i == 0 ? BlockHash.Root : _hashes[i - 1], tokens.Slice(i * bt, bt)));
        var key = _hashes[length / bt - 1];
        if (_prefixes.Has(key)) return;
        _prefixes.Put(key, Slots.Snapshot(length, _count));
    }

    /// <summary>The policy state of a new sequence of <paramref name="cache"/>, or null without a policy.</summary>
    public static SequencePolicy? For(PagedKvCache cache, IKvBlockReader kv, int[] count) =>
        cache.Config.Policy is { } p ? new SequencePolicy(cache, p, kv, count) : null;

    public KvPolicy Policy => _config.Policy;
    internal IKvBlockReader Kv => _kv;
    internal int Count(int layer) => _count[layer];
    private PolicyRuntime Runtime => _runtime ??= new PolicyRuntime(this);

    /// <summary>
    /// Attention probabilities of the chunk's last <see cref="KvPolicy.ObservedQueries"/> queries over this layer's slots,
    /// summed over each KV head's query heads and added to the slots' statistics (reset first unless the policy
    /// accumulates). Online softmax keeps no normalised probabilities, so this is a second pass over the scores only
    /// (no values, the scores from <see cref="KeyScores"/> as attention computed them), normalised per row.
    /// </summary>
    public void ObserveAttention(int layer, ReadOnlySpan<float> q, int n)
    {
        var policy = _config.Policy;
        var shape = _kv.Shape;
        int obs = Math.Min(n, policy.ObservedQueries);
        int count = _count[layer], hd = shape.HeadDim, g = shape.GroupSize, bt = _kv.BlockTokens;
        var rt = Runtime;
        rt.EnsureObserve(QueryChunk * g, count, bt, hd);
        var blocks = _kv.Blocks(layer);
        for (int head = 0; head < shape.KvHeads; head++)
        {
            var att = Slots.Attention(layer, head)[..count];
            if (!policy.AccumulatesAttention) att.Clear();
            for (int t0 = n - obs; t0 < n; t0 += QueryChunk)
            {
                int t1 = Math.Min(n, t0 + QueryChunk), nq = (t1 - t0) * g;
                var qs = rt.Q.AsSpan(0, nq * hd);
                KeyScores.GatherQueries(shape, q, head, t0, t1, qs);
                var rows = rt.Rows.AsSpan(0, nq * count);
                for (int s0 = 0; s0 < count; s0 += bt)
                {
                    int cnt = Math.Min(bt, count - s0);
                    var block = rt.BlockScores.AsSpan(0, nq * cnt);
                    KeyScores.Block(_kv, layer, head, s0, cnt, blocks[s0 / bt], qs, nq, block, rt.Tile);
                    for (int r = 0; r < nq; r++) block.Slice(r * cnt, cnt).CopyTo(rows.Slice(r * count + s0, cnt));
                }
                for (int r = 0; r < nq; r++)
                {
                    int visible = count - n + t0 + r / g + 1;
                    var row = rows.Slice(r * count, visible);
                    float mx = TensorPrimitives.Max(row);
                    TensorPrimitives.Subtract(row, mx, row);
                    TensorPrimitives.Exp(row, row);
                    float inv = 1f / TensorPrimitives.Sum(row);
                    TensorPrimitives.MultiplyAdd(row, inv, att[..visible], att[..visible]);
                }
            }
        }
    }

    /// <summary>
    /// After a committed chunk of <paramref name="n"/> tokens (the sequence now <paramref name="length"/> long): every
    /// layer holding more slots than its budget keeps the policy's choice. Per layer, the policy selects (per KV head, or
    /// once for all heads in layer scope), may merge evicted slots into kept ones, then kept slots are moved down in order
    /// (bytes by <see cref="Codecs.KvCodec.CopySlot"/>, bookkeeping alike) and emptied blocks go back to the layer's pool.
    /// </summary>
    public void Apply(int n, int length)
    {
        LastChunk = n;
        Length = length;
        var policy = _config.Policy;
        var rt = Runtime;
        int layers = _kv.Shape.Layers, kvHeads = _kv.Shape.KvHeads;
        int average = _config.Budget.Tokens(length);
        // Layers about to change first copy the blocks they share (a fork, an adopted prefix): check that every such
        // copy fits before anything changes.
        for (int layer = 0; layer < layers; layer++)
            _evicts[layer] = _count[layer] > Math.Max(policy.LayerBudget(layer, layers, average), rt.Sinks(layer, -1) + 1);
        Slots.CheckCanOwn(_evicts);
        for (int layer = 0; layer < layers; layer++)
        {
            int count = _count[layer];
            int keep = Math.Max(policy.LayerBudget(layer, layers, average), rt.Sinks(layer, -1) + 1);
            if (count <= keep) continue;
            Slots.OwnAll(layer);
            rt.BeginLayer(layer, keep);
            var kept = rt.Kept(count);
            if (_config.Budget.Scope == BudgetScope.Layer)
            {
                policy.Select(rt, layer, -1, keep, kept);
                for (int head = 0; head < kvHeads; head++) EvictHead(rt, layer, head, kept);
            }
            else
                for (int head = 0; head < kvHeads; head++)
                {
                    policy.Select(rt, layer, head, keep, kept);
                    EvictHead(rt, layer, head, kept);
                }
            _count[layer] = keep;
            Slots.Shrink(layer, keep);
        }
        if (_prefixes != null) KeepPrefix(n, length);
    }

    private void EvictHead(PolicyRuntime rt, int layer, int head, ReadOnlySpan<bool> kept)
    {
        var policy = _config.Policy;
        int count = _count[layer], kept0 = 0;
        for (int s = 0; s < count; s++) if (kept[s]) kept0++;
        if (kept0 != rt.Keep(layer))
            throw new InvalidOperationException($"policy '{policy.Name}' kept {kept0} slots of layer {layer} head {head}, not {rt.Keep(layer)}");
        for (int s = 0; s < rt.Sinks(layer, head); s++)
            if (!kept[s]) throw new InvalidOperationException($"policy '{policy.Name}' evicted sink slot {s} of layer {layer} head {head}");
        if (policy.Merges) policy.BeforeEviction(rt, layer, head, kept);
        _ = _kv.BlockTokens;
        int w = 0;
        var blocks = Slots.Blocks(layer);
        for (int s = 0; s < count; s++)
        {
            if (!kept[s]) continue;
            if (s != w)
            {
                MoveSlot(_kv.Keys, layer, head, blocks, s, w);
                MoveSlot(_kv.Values, layer, head, blocks, s, w);
                Slots.Move(layer, head, s, w);
            }
            w++;
        }
    }

    private void MoveSlot(KvSideStore side, int layer, int head, ReadOnlySpan<int> blocks, int from, int to)
    {
        int bt = _kv.BlockTokens;
        int bf = blocks[from / bt], bto = blocks[to / bt];
        side.Codecs[layer][head].CopySlot(side.Block(layer, bf, head), side.Outliers(layer, bf, head), from % bt,
            side.Block(layer, bto, head), side.Outliers(layer, bto, head), to % bt);
    }
}
