using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

/// <summary>Plain model of <see cref="PagedSequences"/> over a <see cref="ModelPool"/>; hashes with the reference
/// twin in <see cref="BlockHashTests"/>, not with <see cref="BlockHash.Of"/>.</summary>
internal sealed class ModelSequences
{
    public sealed class Seq
    {
        public readonly List<int> Blocks = new();
        public readonly List<int> Tokens = new();
        public readonly List<BlockHash> Hashes = new();
    }

    public readonly ModelPool Pool;
    public readonly SortedDictionary<int, Seq> Live = new();
    private int _nextId;
    private int B => Pool.TokensPerBlock;

    public ModelSequences(int blockCount, int tokensPerBlock) => Pool = new ModelPool(blockCount, tokensPerBlock);

    public int CountCached(int[] tokens, int maxBlocks)
    {
        var parent = BlockHash.Root;
        int n = 0;
        while (n < Math.Min(maxBlocks, tokens.Length / B))
        {
            parent = BlockHashTests.Reference(parent, tokens.AsSpan(n * B, B));
            if (!Pool.BlockByHash.ContainsKey(parent)) break;
            n++;
        }
        return n;
    }

    public int Create(int[] prompt, out int cached)
    {
        var seq = new Seq();
        int maxBlocks = prompt.Length == 0 ? 0 : (prompt.Length - 1) / B;
        var parent = BlockHash.Root;
        while (seq.Blocks.Count < maxBlocks)
        {
            int i = seq.Blocks.Count;
            parent = BlockHashTests.Reference(parent, prompt.AsSpan(i * B, B));
            if (!Pool.BlockByHash.TryGetValue(parent, out int block)) break;
            Pool.AddRef(block);
            seq.Blocks.Add(block);
            seq.Hashes.Add(parent);
        }
        cached = seq.Blocks.Count * B;
        seq.Tokens.AddRange(prompt.AsSpan(0, cached));
        Live.Add(_nextId, seq);
        return _nextId++;
    }

    /// <summary>Blocks the append needs; false (and no change) when the pool has fewer free.</summary>
    public bool TryAppend(int id, int[] tokens, List<TokenSlot> slots, out BlockCopy? copy, out int needed)
    {
        var seq = Live[id];
        int count = seq.Tokens.Count;
        bool partial = count % B != 0;
        bool mustCopy = tokens.Length > 0 && partial && Pool.Ref[seq.Blocks[^1]] > 1;
        needed = tokens.Length == 0 ? 0 : (count + tokens.Length + B - 1) / B - seq.Blocks.Count + (mustCopy ? 1 : 0);
        copy = null;
        if (needed > Pool.Free.Count) return false;
        if (tokens.Length > 0 && partial)
        {
            int last = seq.Blocks[^1];
            if (mustCopy)
            {
                int fresh = Pool.Allocate();
                Pool.Release(last);
                seq.Blocks[^1] = fresh;
                copy = new BlockCopy(last, fresh, count % B);
            }
            else
            {
                Pool.Forget(last);
            }
        }
        foreach (int token in tokens)
        {
            if (seq.Tokens.Count % B == 0) seq.Blocks.Add(Pool.Allocate());
            slots.Add(new TokenSlot(seq.Blocks[^1], seq.Tokens.Count % B));
            seq.Tokens.Add(token);
        }
        for (int i = seq.Hashes.Count; i < seq.Tokens.Count / B; i++)
        {
            var blockTokens = seq.Tokens.GetRange(i * B, B).ToArray();
            var hash = BlockHashTests.Reference(i == 0 ? BlockHash.Root : seq.Hashes[i - 1], blockTokens);
            seq.Hashes.Add(hash);
            Pool.Register(seq.Blocks[i], hash, blockTokens);
        }
        return true;
    }

    public int Fork(int id)
    {
        var parent = Live[id];
        var child = new Seq();
        child.Blocks.AddRange(parent.Blocks);
        child.Tokens.AddRange(parent.Tokens);
        child.Hashes.AddRange(parent.Hashes);
        foreach (int b in child.Blocks) Pool.AddRef(b);
        Live.Add(_nextId, child);
        return _nextId++;
    }

    public void Truncate(int id, int tokenCount)
    {
        var seq = Live[id];
        int keep = (tokenCount + B - 1) / B;
        while (seq.Blocks.Count > keep)
        {
            Pool.Release(seq.Blocks[^1]);
            seq.Blocks.RemoveAt(seq.Blocks.Count - 1);
        }
        seq.Tokens.RemoveRange(tokenCount, seq.Tokens.Count - tokenCount);
        seq.Hashes.RemoveRange(tokenCount / B, seq.Hashes.Count - tokenCount / B);
    }

    public void Free(int id)
    {
        Truncate(id, 0);
        Live.Remove(id);
    }
}
