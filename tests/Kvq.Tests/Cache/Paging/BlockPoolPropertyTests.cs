using Kvq.Cache.Paging;

namespace Kvq.Tests.Cache.Paging;

/// <summary>
/// Seeded random runs straight against <see cref="BlockPool"/>: allocate (one or many), add references to held or
/// cached-free blocks, release, and register blocks under a few hashes (so duplicates are common), against
/// <see cref="ModelPool"/>. The test holds the references itself, as a multiset of block ids.
/// </summary>
public class BlockPoolPropertyTests
{
    [Theory]
    [InlineData(1, 201)]
    [InlineData(5, 202)]
    [InlineData(33, 203)]
    public void RandomOperations_MatchModel(int blockCount, int seed)
    {
        var rng = new Random(seed);
        var pool = new BlockPool(blockCount, 3);
        var model = new ModelPool(blockCount, 3);
        var held = new int[blockCount];                  // references the test holds, per block id
        var hashes = new BlockHash[6];
        for (int i = 0; i < hashes.Length; i++) hashes[i] = BlockHash.Of(BlockHash.Root, new[] { i, i, i });
        int revived = 0, evictions = 0, full = 0;

        for (int step = 0; step < 4000; step++)
        {
            int id = rng.Next(blockCount);
            switch (rng.Next(6))
            {
                case 0:
                case 1:
                {
                    var ids = new int[rng.Next(1, 4)];
                    if (ids.Length > model.Free.Count)
                    {
                        var ex = Assert.Throws<KvCacheFullException>(() => pool.Allocate(ids));
                        Assert.Equal((ids.Length, model.Free.Count), (ex.RequestedBlocks, ex.AvailableBlocks));
                        full++;
                        break;
                    }
                    long before = model.Evictions;
                    pool.Allocate(ids);
                    foreach (int got in ids)
                    {
                        Assert.Equal(model.Allocate(), got);
                        held[got]++;
                    }
                    evictions += (int)(model.Evictions - before);
                    break;
                }
                case 2 when held[id] > 0 || model.HashByBlock.ContainsKey(id):
                    if (held[id] == 0) revived++;
                    pool.AddRef(id);
                    model.AddRef(id);
                    held[id]++;
                    break;
                case 3:
                case 4 when held[id] > 0:
                    if (held[id] == 0)
                    {
                        Assert.Throws<InvalidOperationException>(() => pool.Release(id));
                        break;
                    }
                    pool.Release(id);
                    model.Release(id);
                    held[id]--;
                    break;
                case 5 when held[id] > 0 && !model.HashByBlock.ContainsKey(id):
                    var hash = hashes[rng.Next(hashes.Length)];
                    Assert.Equal(model.Register(id, hash, null), pool.Prefixes.TryRegister(id, hash));
                    break;
            }
            PagingInvariants.CheckPool(pool, model, held, step);
        }
        Assert.True(revived > 0 && evictions > 0 && full > 0, $"revived {revived}, evictions {evictions}, full {full}");
    }
}
