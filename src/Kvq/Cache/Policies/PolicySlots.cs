using Kvq.Cache.Paging;

namespace Kvq.Cache.Policies;

/// <summary>
/// Bookkeeping of a sequence under a token policy (no tensors): each layer owns its list of block ids, drawn from that
/// layer's <see cref="BlockPool"/> and returned to it when the layer keeps fewer slots; each (layer, KV head) keeps, per
/// slot, the position of its token, its log-weight (merging) and the attention it received (policies that read it).
/// Slot s of a layer lives in block Blocks(layer)[s / B] at offset s % B, B = tokens per block; slots are in position order.
/// </summary>
internal sealed class PolicySlots
{
    private readonly BlockPool[] _pools;          // per layer
    private readonly int _heads, _bt;
    private readonly int[][] _blocks;             // per layer: block ids
    private readonly int[] _blockCount;           // per layer
    private readonly int[][] _positions;          // per (layer, head): token position of each slot
    private readonly float[]?[] _logWeights;      // per (layer, head), when merging
    private readonly float[]?[] _attention;       // per (layer, head), when the policy reads attention

    public PolicySlots(BlockPool[] pools, int kvHeads, int blockTokens, bool logWeights, bool attention)
    {
        _pools = pools;
        _heads = kvHeads;
        _bt = blockTokens;
        int layers = pools.Length, n = layers * kvHeads;
        _blocks = new int[layers][];
        for (int l = 0; l < layers; l++) _blocks[l] = new int[4];
        _blockCount = new int[layers];
        _positions = new int[n][];
        _logWeights = new float[]?[n];
        _attention = new float[]?[n];
        for (int i = 0; i < n; i++)
        {
            _positions[i] = [];
            if (logWeights) _logWeights[i] = [];
            if (attention) _attention[i] = [];
        }
    }

    public bool HasLogWeights => _logWeights[0] != null;
    public bool HasAttention => _attention[0] != null;

    public ReadOnlySpan<int> Blocks(int layer) => _blocks[layer].AsSpan(0, _blockCount[layer]);

    /// <summary>Blocks held over all layers (each a layer's keys and values for every KV head).</summary>
    public long HeldBlocks
    {
        get
        {
            long n = 0;
            foreach (var c in _blockCount) n += c;
            return n;
        }
    }

    public Span<int> Positions(int layer, int head) => _positions[layer * _heads + head];
    public Span<float> LogWeights(int layer, int head) => _logWeights[layer * _heads + head];
    public Span<float> Attention(int layer, int head) => _attention[layer * _heads + head];

    /// <summary>
    /// Room for <paramref name="n"/> more slots in every layer (layer l holds counts[l]); the new slots get positions
    /// length, length+1, ..., log-weight 0 and no attention. All or nothing across layers.
    /// </summary>
    /// <exception cref="KvCacheFullException">A layer's pool has too few free blocks; nothing changed.</exception>
    public void Reserve(ReadOnlySpan<int> counts, int n, int length)
    {
        for (int l = 0; l < _pools.Length; l++)
        {
            int need = (counts[l] + n + _bt - 1) / _bt - _blockCount[l];
            if (need > _pools[l].FreeBlockCount) throw _pools[l].Full(need);
        }
        for (int l = 0; l < _pools.Length; l++)
        {
            int blocks = (counts[l] + n + _bt - 1) / _bt;
            while (_blockCount[l] < blocks)
            {
                if (_blockCount[l] == _blocks[l].Length) Array.Resize(ref _blocks[l], _blocks[l].Length * 2);
                _blocks[l][_blockCount[l]++] = _pools[l].Allocate();
            }
            int capacity = blocks * _bt;
            for (int h = 0; h < _heads; h++)
            {
                int i = l * _heads + h;
                Grow(ref _positions[i], capacity);
                if (_logWeights[i] != null) Grow(ref _logWeights[i]!, capacity);
                if (_attention[i] != null) Grow(ref _attention[i]!, capacity);
                for (int t = 0; t < n; t++) _positions[i][counts[l] + t] = length + t;
                _logWeights[i]?.AsSpan(counts[l], n).Clear();
                _attention[i]?.AsSpan(counts[l], n).Clear();
            }
        }
    }

    /// <summary>Fresh blocks the layer that needs most takes to hold <paramref name="n"/> more slots (layer l holds
    /// counts[l]), no layer counted past <paramref name="slotCap"/> slots (what the policy lets it keep).</summary>
    public int BlocksNeeded(ReadOnlySpan<int> counts, int n, int slotCap = int.MaxValue)
    {
        int most = 0;
        for (int l = 0; l < _pools.Length; l++)
        {
            long slots = Math.Min((long)counts[l] + n, Math.Max(slotCap, counts[l]));
            most = Math.Max(most, (int)((slots + _bt - 1) / _bt) - _blockCount[l]);
        }
        return most;
    }

    /// <summary>Moves slot <paramref name="from"/>'s bookkeeping to slot <paramref name="to"/> (compaction).</summary>
    public void Move(int layer, int head, int from, int to)
    {
        int i = layer * _heads + head;
        _positions[i][to] = _positions[i][from];
        if (_logWeights[i] is { } w) w[to] = w[from];
        if (_attention[i] is { } a) a[to] = a[from];
    }

    /// <summary>Layer <paramref name="layer"/> now holds <paramref name="slots"/> slots: blocks past them go back to its pool.</summary>
    public void Shrink(int layer, int slots)
    {
        int keep = (slots + _bt - 1) / _bt;
        while (_blockCount[layer] > keep) _pools[layer].Release(_blocks[layer][--_blockCount[layer]]);
    }

    public void ReleaseAll()
    {
        for (int l = 0; l < _pools.Length; l++) Shrink(l, 0);
    }

    private static void Grow<T>(ref T[] a, int capacity)
    {
        if (a.Length < capacity) Array.Resize(ref a, Math.Max(capacity, a.Length * 2));
    }
}
