using Kvq.Cache.Paging;

namespace Kvq.Cache.Policies;

/// <summary>
/// Bookkeeping of a sequence under a token policy (no tensors): each layer owns its list of block ids, drawn from that
/// layer's <see cref="BlockPool"/> and returned to it when the layer keeps fewer slots; each (layer, KV head) keeps, per
/// slot, the position of its token, its log-weight (merging) and the attention it received (policies that read it).
/// Slot s of a layer lives in block Blocks(layer)[s / B] at offset s % B, B = tokens per block; slots are in position order.
/// <para>
/// Blocks may be shared: with a forked sequence, or with a prompt prefix adopted from <see cref="PolicyPrefixes"/>
/// (which registers them in the layer's pool). A block that is shared (refcount above 1) or registered is never written:
/// before a write it is copied into a fresh block of the same pool (copy-on-write; <see cref="OwnAll"/> before the policy
/// changes a layer, <see cref="Reserve"/> for the partial last block), so the other holders and the cached prefix keep
/// their bytes. A registered block held here alone is copied too (the copy goes back to the pool as a cached prefix),
/// unless the pool has no block to spare: then its entry is dropped and it is written in place.
/// </para>
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
    private readonly Action<int, int, int> _copyBlock; // (layer, source, destination): the bytes of a block

    public PolicySlots(BlockPool[] pools, int kvHeads, int blockTokens, bool logWeights, bool attention, Action<int, int, int> copyBlock)
    {
        _pools = pools;
        _copyBlock = copyBlock;
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
            if (n > 0 && counts[l] % _bt != 0 && _pools[l].RefCount(_blocks[l][counts[l] / _bt]) > 1) need++;
            if (need > _pools[l].FreeBlockCount) throw _pools[l].Full(need);
        }
        for (int l = 0; l < _pools.Length; l++)
        {
            if (n > 0 && counts[l] % _bt != 0) Own(l, counts[l] / _bt);
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
    /// counts[l]), no layer counted past <paramref name="slotCap"/> slots (what the policy lets it keep), plus the copies
    /// of its shared blocks that the policy's next change makes.</summary>
    public int BlocksNeeded(ReadOnlySpan<int> counts, int n, int slotCap = int.MaxValue)
    {
        int most = 0;
        for (int l = 0; l < _pools.Length; l++)
        {
            long slots = Math.Min((long)counts[l] + n, Math.Max(slotCap, counts[l]));
            most = Math.Max(most, (int)((slots + _bt - 1) / _bt) - _blockCount[l] + SharedBlocks(l));
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

    /// <summary>Blocks of <paramref name="layer"/> held by other sequences too (each is copied before the layer changes).</summary>
    public int SharedBlocks(int layer)
    {
        int n = 0;
        foreach (int id in Blocks(layer)) if (_pools[layer].RefCount(id) > 1) n++;
        return n;
    }

    /// <summary>Whether every layer marked in <paramref name="layers"/> can copy its shared blocks (the check before a
    /// policy step changes anything).</summary>
    /// <exception cref="KvCacheFullException">A layer's pool cannot; nothing changed.</exception>
    public void CheckCanOwn(ReadOnlySpan<bool> layers)
    {
        for (int l = 0; l < _pools.Length; l++)
        {
            if (!layers[l]) continue;
            int need = SharedBlocks(l);
            if (need > _pools[l].FreeBlockCount) throw _pools[l].Full(need);
        }
    }

    /// <summary>Makes every block of <paramref name="layer"/> this sequence's own (copy-on-write of shared or registered
    /// ones) before the policy moves, merges or drops its slots.</summary>
    public void OwnAll(int layer)
    {
        for (int i = 0; i < _blockCount[layer]; i++) Own(layer, i);
    }

    /// <summary>Block <paramref name="index"/> of <paramref name="layer"/> becomes writable here: a shared block is
    /// copied into a fresh one; a registered one held here alone too, or unregistered when no block is free.</summary>
    private void Own(int layer, int index)
    {
        var pool = _pools[layer];
        int id = _blocks[layer][index];
        int rc = pool.RefCount(id);
        bool registered = pool.Prefixes.IsRegistered(id);
        if (rc == 1 && !registered) return;
        if (rc == 1 && pool.FreeBlockCount == 0)
        {
            pool.Unregister(id);
            return;
        }
        int fresh = pool.Allocate(); // rc > 1 with no free block: KvCacheFullException (callers check first)
        _copyBlock(layer, id, fresh);
        pool.Release(id);
        _blocks[layer][index] = fresh;
    }

    /// <summary>Takes the state of <paramref name="source"/> (a fork): one more reference on each of its blocks and a copy
    /// of each slot's bookkeeping. This one must be empty.</summary>
    public void CopyFrom(PolicySlots source)
    {
        for (int l = 0; l < _pools.Length; l++)
        {
            if (_blockCount[l] != 0) throw new InvalidOperationException("only an empty sequence takes another's slots");
            var ids = source.Blocks(l);
            foreach (int id in ids) _pools[l].AddRef(id);
            _blocks[l] = ids.ToArray();
            if (_blocks[l].Length == 0) _blocks[l] = new int[4];
            _blockCount[l] = ids.Length;
        }
        for (int i = 0; i < _positions.Length; i++)
        {
            _positions[i] = (int[])source._positions[i].Clone();
            if (_logWeights[i] != null) _logWeights[i] = (float[])source._logWeights[i]!.Clone();
            if (_attention[i] != null) _attention[i] = (float[])source._attention[i]!.Clone();
        }
    }

    /// <summary>The state after <paramref name="length"/> tokens, layer l holding counts[l] slots, as
    /// <see cref="PolicyPrefixes"/> keeps it (block ids without references; arrays copied).</summary>
    public PolicySnapshot Snapshot(int length, ReadOnlySpan<int> counts)
    {
        int layers = _pools.Length;
        var blocks = new int[layers][];
        for (int l = 0; l < layers; l++) blocks[l] = Blocks(l).ToArray();
        var positions = new int[_positions.Length][];
        var logWeights = new float[]?[_positions.Length];
        var attention = new float[]?[_positions.Length];
        for (int i = 0; i < _positions.Length; i++)
        {
            int c = counts[i / _heads];
            positions[i] = _positions[i].AsSpan(0, c).ToArray();
            logWeights[i] = _logWeights[i]?.AsSpan(0, c).ToArray();
            attention[i] = _attention[i]?.AsSpan(0, c).ToArray();
        }
        return new PolicySnapshot(length, counts.ToArray(), blocks, positions, logWeights, attention);
    }

    /// <summary>Starts this (empty) sequence on <paramref name="s"/>'s state: a reference on each of its blocks (a
    /// cached one is revived), its slots' bookkeeping copied.</summary>
    public void Adopt(PolicySnapshot s)
    {
        for (int l = 0; l < _pools.Length; l++)
        {
            if (_blockCount[l] != 0) throw new InvalidOperationException("only an empty sequence adopts a prefix");
            foreach (int id in s.Blocks[l]) _pools[l].AddRef(id);
            _blocks[l] = s.Blocks[l].Length == 0 ? new int[4] : (int[])s.Blocks[l].Clone();
            _blockCount[l] = s.Blocks[l].Length;
        }
        for (int i = 0; i < _positions.Length; i++)
        {
            _positions[i] = (int[])s.Positions[i].Clone();
            if (_logWeights[i] != null) _logWeights[i] = (float[])s.LogWeights[i]!.Clone();
            if (_attention[i] != null) _attention[i] = (float[])s.Attention[i]!.Clone();
        }
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
