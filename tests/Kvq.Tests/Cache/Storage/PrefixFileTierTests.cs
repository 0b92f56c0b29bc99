using Kvq.Cache;
using Kvq.Cache.Storage;
using Kvq.Serving;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache.Storage;

/// <summary>Cold prefix blocks on disk behind the host tier (<see cref="PrefixFileTier"/>): what host memory has no
/// room for is written to a file per block and read back for a later prompt, holding exactly what a pool hit holds.</summary>
public sealed class PrefixFileTierTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-prefix-disk-tests-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static (int Files, long Bytes) OnDisk(PrefixFileTier disk) =>
        disk.Folder == null ? (0, 0) : (Directory.GetFiles(disk.Folder).Length, Directory.GetFiles(disk.Folder).Sum(f => new FileInfo(f).Length));

    /// <summary>Prompt A (5 whole blocks) runs in a pool of 7 blocks, prompt B evicts A's blocks; with host memory for
    /// <paramref name="hostBlocks"/> blocks the rest go to disk. A again finds all 5 blocks (host + disk, none in the
    /// pool), and its logits after the last prompt token equal bit for bit those after a pool hit in a large cache (for
    /// the lossy formats: the same encoded bytes, outlier rows and sink copies). The files' count and bytes are what the
    /// tier counts; taken blocks' files are gone, and the folder with the tier.</summary>
    [Theory]
    [InlineData("f16", 0, 0)]
    [InlineData("q4_0/q8_0", 0, 2)]
    [InlineData("nuq3-1%", 1, 0)]
    [InlineData("nuq3-1%", 0, 3)]
    [InlineData("f16", 4, 1)]
    public void ColdPrefixBlocksComeBackFromDiskAsTheyWereStored(string spec, int sink, int hostBlocks)
    {
        var config = StorageFixtures.Config(spec, sink);
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        int vocab = model.Config.VocabSize;
        var a = EngineFixtures.MobyPrompt(4000, 160);
        var b = EngineFixtures.MobyPrompt(9000, 200);

        var small = new PagedKvCache(model.KvShape, config, maxTokens: 7 * 32);
        using var disk = new PrefixFileTier(small.Plan, _dir, 64 << 20);
        // An entry is a block's bytes plus, for a first block, its sink copies: room for hostBlocks plain blocks.
        long hostBudget = hostBlocks * (small.Plan.BytesPerBlock + small.Plan.OutlierReservePerBlock);
        var tier = small.KeepEvictedPrefixes(hostBudget, disk);
        var logits = new float[vocab];
        using (var first = small.CreateSequence(a)) model.Forward(a, first, logits);
        using (var other = small.CreateSequence(b)) model.Forward(b, other, logits);
        Assert.Equal(0, small.Sequences.Pool.Prefixes.CountCachedBlocks(a));
        Assert.True(disk.Count >= 5 - hostBlocks, $"the disk holds {disk.Count} blocks");
        Assert.Equal((disk.Count, disk.Bytes), OnDisk(disk));
        var fromTiers = new float[vocab];
        using (var again = small.CreateSequence(a))
        {
            Assert.True(disk.Failed == 0, disk.LastError?.Message);
            Assert.Equal(160, again.Length);
            Assert.Equal(5, tier.Hits + disk.Hits);
            Assert.True(disk.Hits >= 5 - hostBlocks, $"{disk.Hits} blocks from disk, {tier.Hits} from host memory");
            model.Forward(a.AsSpan(again.Length), again, fromTiers);
        }
        Assert.Equal(0, disk.Failed);
        Assert.Equal((disk.Count, disk.Bytes), OnDisk(disk));

        Assert.Equal(StorageFixtures.PoolHitLogits(model, config, a, 160), fromTiers);
        string folder = disk.Folder!;
        disk.Dispose();
        Assert.False(Directory.Exists(folder));
    }

    /// <summary>The disk tier keeps its budget (file bytes, dropping the oldest), and a block whose file was corrupted
    /// is a miss: the prompt stops there (to be recomputed), the file is removed and counted.</summary>
    [Fact]
    public void TheDiskKeepsItsBudgetAndACorruptedBlockIsAMiss()
    {
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        var cache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16"), maxTokens: 4 * 32);
        // Header, block hash, layer count, a length per layer and side, the block, the sink flag, SHA-256.
        long fileBytes = 20 + 16 + 4 + 8L * model.KvShape.Layers + cache.Plan.BytesPerBlock + 1 + 32;
        using var disk = new PrefixFileTier(cache.Plan, _dir, 5 * fileBytes);
        var tier = cache.KeepEvictedPrefixes(0, disk);
        var logits = new float[model.Config.VocabSize];
        var prompts = Enumerable.Range(0, 4).Select(i => EngineFixtures.MobyPrompt(5000 + 700 * i, 96)).ToArray();   // 3 whole blocks each
        foreach (var p in prompts)
            using (var s = cache.CreateSequence(p)) model.Forward(p, s, logits);
        Assert.Equal(5, disk.Count);
        Assert.Equal(5 * fileBytes, disk.Bytes);
        Assert.Equal((5, 5 * fileBytes), OnDisk(disk));
        Assert.True(disk.Dropped > 0);
        Assert.Equal(0, tier.Bytes);
        // prompts[0]'s blocks were dropped first: nothing of it is left.
        using (var oldest = cache.CreateSequence(prompts[0])) Assert.Equal(0, oldest.Length);
        // Files are numbered as written: prompts[0]'s 3 blocks went to files 0..2 (evicted by prompts[1]), prompts[1]'s to
        // 3..5, prompts[2]'s to 6..8, the oldest dropped for room. A bit flipped in the file of prompts[2]'s second
        // block stops its prefix after the first.
        int before = disk.Count;
        var second = Path.Combine(disk.Folder!, "block-7.kvqblk");
        Assert.True(File.Exists(second));
        var bytes = File.ReadAllBytes(second);
        bytes[100] ^= 4;
        File.WriteAllBytes(second, bytes);
        using (var s = cache.CreateSequence(prompts[2]))
        {
            Assert.Equal(32, s.Length);
            Assert.Equal(1, disk.Failed);
            Assert.IsType<InvalidDataException>(disk.LastError);
            Assert.Contains("checksum", disk.LastError!.Message, StringComparison.Ordinal);
        }
        Assert.False(File.Exists(second));
        Assert.Equal((disk.Count, disk.Bytes), OnDisk(disk));
        Assert.True(disk.Count < before);
    }

    [Fact]
    public void BadBudgetsAreRefused()
    {
        var plan = Kvq.Cache.Layout.KvLayoutPlan.Build(EngineFixtures.Model(EngineFixtures.Books).KvShape, KvCacheConfig.Parse("f16"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrefixFileTier(plan, _dir, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new HostPrefixTier(0));
        var m = EngineFixtures.Books;
        Assert.Throws<ArgumentException>(() => new InferenceEngine(EngineFixtures.Model(m), m.Tokenizer,
            new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 1 << 24, PrefixCache = false, PrefixDiskBytes = 1 << 20 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new InferenceEngine(EngineFixtures.Model(m), m.Tokenizer,
            new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 1 << 24, PrefixDiskBytes = -1 }));
    }

    /// <summary>A folder that cannot take files is refused when the tier (or the engine) is made, naming it, not found
    /// at the first eviction (where every write would fail and every prefix be recomputed, quietly).</summary>
    [Fact]
    public void AnUnwritableFolderIsRefusedAtStart()
    {
        var file = Path.Combine(Directory.CreateDirectory(_dir).FullName, "a-file");
        File.WriteAllText(file, "x");
        var under = Path.Combine(file, "prefixes");
        var plan = Kvq.Cache.Layout.KvLayoutPlan.Build(EngineFixtures.Model(EngineFixtures.Books).KvShape, KvCacheConfig.Parse("f16"));
        var e = Assert.Throws<Kvq.IO.FileWriteException>(() => new PrefixFileTier(plan, under, 1 << 20));
        Assert.Equal($"cannot write {under}: {file} is a file, not a folder", e.Message);
        var m = EngineFixtures.Books;
        e = Assert.Throws<Kvq.IO.FileWriteException>(() => new InferenceEngine(EngineFixtures.Model(m), m.Tokenizer,
            new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 1 << 24, PrefixDiskBytes = 1 << 20, PrefixDiskDirectory = under }));
        Assert.Equal(under, e.FilePath);
    }

    /// <summary>In the engine, with a pool that holds one prompt and no host memory for prefixes: the first prompt,
    /// evicted by two others, is found again on disk (192 of its 201 tokens, counted as prefix hits) and answers the
    /// same greedy tokens as without the tier (recomputed) and as alone. The folder goes with the engine.</summary>
    [Fact]
    public async Task TheEngineServesAnEvictedPrefixFromDisk()
    {
        var m = EngineFixtures.Books;
        var plan = Kvq.Cache.Layout.KvLayoutPlan.Build(EngineFixtures.Model(m).KvShape, KvCacheConfig.Parse("q8_0"));
        long budget = 8 * plan.BytesPerBlock;
        var prompts = new[] { EngineFixtures.MobyPrompt(7000, 200), EngineFixtures.MobyPrompt(11000, 200), EngineFixtures.MobyPrompt(15000, 200) };
        var cached = new List<int>();
        var tokens = new List<IReadOnlyList<int>>();
        string? folder = null;
        foreach (long diskBytes in new long[] { 0, 64 << 20 })
        {
            using var engine = new InferenceEngine(EngineFixtures.Model(m), m.Tokenizer, new EngineOptions
            {
                Kv = KvCacheConfig.Parse("q8_0"), KvBudgetBytes = budget, PrefixDiskBytes = diskBytes, PrefixDiskDirectory = _dir,
            });
            foreach (var p in prompts) await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(p, 8)));
            var again = await EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(prompts[0], 8)));
            cached.Add(again.CachedPromptTokens);
            tokens.Add(again.Tokens);
            if (engine.PrefixDisk is { } disk)
            {
                Assert.Equal(6, disk.Hits);
                Assert.Equal(0L, engine.Pool.Cache.HostPrefixes!.Bytes);
                Assert.Equal(disk.Bytes, Directory.GetFiles(disk.Folder!).Sum(f => new FileInfo(f).Length));
                folder = disk.Folder;
            }
        }
        Assert.Equal([0, 192], cached);
        Assert.Equal(tokens[0], tokens[1]);
        Assert.Equal(EngineFixtures.SoloGreedy(m, prompts[0], 8, "q8_0"), tokens[1]);
        Assert.NotNull(folder);
        Assert.False(Directory.Exists(folder));
    }
}
