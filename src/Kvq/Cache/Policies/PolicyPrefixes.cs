using Kvq.Cache.Paging;

namespace Kvq.Cache.Policies;

/// <summary>
/// Prompt prefixes shared between sequences under a token policy. A policy changes a layer's blocks after every chunk
/// (evicts, compacts, merges), so what a prefix of P tokens leaves in the cache is not "the blocks of tokens [0, P)"
/// but the policy's state after those tokens: per layer its blocks and per slot the positions, log-weights and attention
/// statistics. That state is a function of the tokens when they came in whole chunks of <see cref="ChunkTokens"/>
/// from the start (as the engine prefills), so it is kept here under the chained hash of tokens [0, P), P a multiple
/// of the chunk and of the block size, and a new sequence whose prompt starts with those tokens adopts it and goes on
/// with the same chunks: it holds exactly what it would hold had it run the prefix alone.
/// <para>
/// The blocks stay in the layers' pools: each is registered in its pool's <see cref="PrefixIndex"/> under a hash of
/// its own (so a released one stays cached, least recently released evicted first, like any cached prefix block), and
/// a registered or shared block is copied before a sequence writes it (<see cref="PolicySlots"/>), so its bytes never
/// change while an entry names it. An entry whose block was reused for other content is dropped when next looked up.
/// Entries (positions and statistics: host memory, a few bytes per kept slot) are kept for the
/// <see cref="Capacity"/> most recently used prefixes.
/// </para>
/// </summary>
public sealed class PolicyPrefixes
{
    private readonly Dictionary<BlockHash, LinkedListNode<(BlockHash Key, PolicySnapshot Snapshot)>> _byKey = new();
    private readonly LinkedList<(BlockHash Key, PolicySnapshot Snapshot)> _lru = new(); // most recent first
    private readonly BlockPool[] _pools;
    private ulong _serial;

    /// <summary>The chunk tokens come in (the engine's prompt chunk under a policy): only a prefix prefilled in whole
    /// chunks of this size is kept and only such a prefix is found.</summary>
    public int ChunkTokens { get; }
    /// <summary>Entries kept at most (least recently used dropped first).</summary>
    public int Capacity { get; }
    /// <summary>Entries now (some may be stale until looked up).</summary>
    public int Count => _byKey.Count;
    /// <summary>Lookups that found a usable prefix; entries found stale (a block reused) and dropped.</summary>
    public long Hits { get; private set; }
    public long Stale { get; private set; }

    internal PolicyPrefixes(BlockPool[] pools, int chunkTokens, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunkTokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        _pools = pools;
        ChunkTokens = chunkTokens;
        Capacity = capacity;
    }

    /// <summary>Tokens between two prefixes that can be kept: a multiple of the chunk and of the block size.</summary>
    public int Step
    {
        get
        {
            int b = _pools[0].TokensPerBlock, a = ChunkTokens, x = a, y = b;
            while (y != 0) (x, y) = (y, x % y);
            return a / x * b;
        }
    }

    /// <summary>The entry for <paramref name="key"/> when every block it names still holds what it held; a stale one
    /// is dropped. Takes no reference.</summary>
    internal bool TryGet(BlockHash key, out PolicySnapshot snapshot)
    {
        snapshot = null!;
        if (!_byKey.TryGetValue(key, out var node)) return false;
        if (!IsIntact(node.Value.Snapshot))
        {
            _lru.Remove(node);
            _byKey.Remove(key);
            Stale++;
            return false;
        }
        _lru.Remove(node);
        _lru.AddFirst(node);
        snapshot = node.Value.Snapshot;
        return true;
    }

    internal void CountHit() => Hits++;

    /// <summary>Whether a usable entry exists for <paramref name="key"/> (a sequence then keeps none of its own).</summary>
    internal bool Has(BlockHash key) => TryGet(key, out _);

    /// <summary>Keeps <paramref name="snapshot"/> under <paramref name="key"/>, registering its blocks that are not
    /// registered yet (a block still registered from an earlier prefix keeps its hash: its bytes have not changed).</summary>
    internal void Put(BlockHash key, PolicySnapshot snapshot)
    {
        if (Has(key)) return;
        ulong serial = ++_serial;
        for (int l = 0; l < snapshot.Blocks.Length; l++)
        {
            var index = _pools[l].Prefixes;
            var blocks = snapshot.Blocks[l];
            var hashes = snapshot.Hashes[l] = new BlockHash[blocks.Length];
            for (int i = 0; i < blocks.Length; i++)
            {
                if (index.TryGetHash(blocks[i], out var h)) { hashes[i] = h; continue; }
                // A hash of its own: (prefix, layer, block index, entry serial) never repeats, so registering cannot collide.
                h = BlockHash.Of(key, [l, i, (int)serial, (int)(serial >> 32)]);
                if (!index.TryRegister(blocks[i], h)) throw new InvalidOperationException($"policy prefix hash {h} taken twice");
                hashes[i] = h;
            }
        }
        var node = _lru.AddFirst((key, snapshot));
        _byKey.Add(key, node);
        while (_byKey.Count > Capacity)
        {
            var last = _lru.Last!;
            _lru.RemoveLast();
            _byKey.Remove(last.Value.Key);
        }
    }

    private bool IsIntact(PolicySnapshot s)
    {
        for (int l = 0; l < s.Blocks.Length; l++)
        {
            var index = _pools[l].Prefixes;
            for (int i = 0; i < s.Blocks[l].Length; i++)
                if (!index.TryGetHash(s.Blocks[l][i], out var h) || h != s.Hashes[l][i]) return false;
        }
        return true;
    }
}

/// <summary>A token policy's state after a prompt prefix (see <see cref="PolicyPrefixes"/>): per layer the slot count and
/// block ids, per (layer, KV head) each slot's position, log-weight and attention statistic.</summary>
internal sealed class PolicySnapshot(int length, int[] counts, int[][] blocks, int[][] positions, float[]?[] logWeights, float[]?[] attention)
{
    public int Length { get; } = length;
    public int[] Counts { get; } = counts;
    public int[][] Blocks { get; } = blocks;
    public BlockHash[][] Hashes { get; } = new BlockHash[blocks.Length][];
    public int[][] Positions { get; } = positions;
    public float[]?[] LogWeights { get; } = logWeights;
    public float[]?[] Attention { get; } = attention;
}
