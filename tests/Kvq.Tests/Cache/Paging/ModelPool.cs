using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

/// <summary>
/// Plain model of <see cref="BlockPool"/> for property tests: the same rules written the obvious way (a List for the
/// free list, dictionaries for the index), with no counters to keep in sync. O(n) everywhere; fine at test sizes.
/// </summary>
internal sealed class ModelPool
{
    public readonly int BlockCount;
    public readonly int TokensPerBlock;
    public readonly int[] Ref;
    public readonly List<int> Free = new();                          // [0] is handed out next
    public readonly Dictionary<BlockHash, int> BlockByHash = new();
    public readonly Dictionary<int, BlockHash> HashByBlock = new();
    public readonly Dictionary<int, int[]> Content = new();          // what a registered block must hold in storage
    public long Evictions;

    public ModelPool(int blockCount, int tokensPerBlock)
    {
        BlockCount = blockCount;
        TokensPerBlock = tokensPerBlock;
        Ref = new int[blockCount];
        for (int i = 0; i < blockCount; i++) Free.Add(i);
    }

    public int Allocate()
    {
        int id = Free[0];
        Free.RemoveAt(0);
        if (HashByBlock.ContainsKey(id))
        {
            Forget(id);
            Evictions++;
        }
        Ref[id] = 1;
        return id;
    }

    public void AddRef(int id)
    {
        if (Ref[id] == 0)
        {
            Assert.True(HashByBlock.ContainsKey(id), $"model: revived block {id} caches nothing");
            Assert.True(Free.Remove(id));
        }
        Ref[id]++;
    }

    public void Release(int id)
    {
        Assert.True(Ref[id] > 0, $"model: block {id} released while free");
        if (--Ref[id] > 0) return;
        if (HashByBlock.ContainsKey(id)) Free.Add(id);   // cached: most recently used, evicted last
        else Free.Insert(0, id);                         // nothing worth keeping: reused first
    }

    public bool Register(int id, BlockHash hash, int[]? content)
    {
        if (BlockByHash.ContainsKey(hash)) return false;
        BlockByHash[hash] = id;
        HashByBlock[id] = hash;
        if (content != null) Content[id] = content;
        return true;
    }

    public void Forget(int id)
    {
        if (!HashByBlock.Remove(id, out var hash)) return;
        BlockByHash.Remove(hash);
        Content.Remove(id);
    }
}
