using System.Collections.Concurrent;
using Kvq.Cache;
using Kvq.Cache.Storage;
using Kvq.Serving;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache.Storage;

/// <summary>Swap preemption's tiers (<see cref="SwapSpace"/>): host memory under a budget, then files; exact bytes per
/// tier; a sequence back from a file is the one swapped out; files gone when taken, dropped or disposed.</summary>
public sealed class SwapSpaceTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kvq-swap-tests-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static long FilesBytes(string? folder) =>
        folder == null || !Directory.Exists(folder) ? 0 : Directory.GetFiles(folder).Sum(f => new FileInfo(f).Length);

    /// <summary>Three sequences swapped out with room in host memory for one and on disk for one: the first stays in
    /// host memory, the second goes to a file, the third is refused; bytes per tier equal the arrays' and the files'.
    /// Each one taken back continues with logits equal bit for bit to those of the sequence that never left (kivi2:
    /// staged recent tokens; nuq3-1% with a sink: outlier rows and exact sink copies).</summary>
    [Theory]
    [InlineData("f16", 0)]
    [InlineData("kivi2", 0)]
    [InlineData("nuq3-1%", 1)]
    public void SequencesSwappedToHostAndFileComeBackExactly(string spec, int sink)
    {
        var config = StorageFixtures.Config(spec, sink);
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        int vocab = model.Config.VocabSize;
        var cache = new PagedKvCache(model.KvShape, config);
        var prompts = new[] { EngineFixtures.MobyPrompt(3000, 70), EngineFixtures.MobyPrompt(6000, 90), EngineFixtures.MobyPrompt(8000, 50) };
        var next = new[] { 11, 22, 33 };
        var expected = new float[3][];
        var swapped = new SwappedKv[3];
        var logits = new float[vocab];
        for (int i = 0; i < 3; i++)
        {
            using var s = cache.CreateSequence();
            model.Forward(prompts[i], s, logits);
            swapped[i] = s.Snapshot();
            expected[i] = new float[vocab];
            model.Forward([next[i]], s, expected[i]);
        }
        // Host memory fits the first; the files the second (a file is its arrays plus a small header and checksum).
        using var space = new SwapSpace(cache.Plan, swapped[0].Bytes, _dir, swapped[1].Bytes + 64 * 1024);
        var tickets = swapped.Select(space.TryPut).ToArray();
        Assert.Equal(SwapTier.Host, tickets[0]!.Tier);
        Assert.Equal(SwapTier.File, tickets[1]!.Tier);
        Assert.Null(tickets[2]);
        Assert.Equal((1, 1, 1), (space.ToHost, space.ToFile, space.Refused));
        Assert.Equal(swapped[0].Bytes, space.HostBytes);
        Assert.NotNull(space.Folder);
        Assert.Single(Directory.GetFiles(space.Folder!));
        Assert.Equal(FilesBytes(space.Folder), space.FileBytes);
        Assert.Equal(space.FileBytes, tickets[1]!.Bytes);
        Assert.True(space.FileBytes > swapped[1].Bytes, $"file {space.FileBytes} bytes, arrays {swapped[1].Bytes}");

        for (int i = 0; i < 2; i++)
        {
            var back = space.TryTake(tickets[i]!);
            Assert.NotNull(back);
            using var s = PagedKvSequence.SwapIn(cache, back!);
            Assert.Equal(prompts[i].Length, s.Length);
            var got = new float[vocab];
            model.Forward([next[i]], s, got);
            Assert.Equal(expected[i], got);
        }
        Assert.Equal((0L, 0L, 0, 0), (space.HostBytes, space.FileBytes, space.HostCount, space.FileCount));
        Assert.Empty(Directory.GetFiles(space.Folder!));
        Assert.Throws<InvalidOperationException>(() => space.TryTake(tickets[0]!));
        string folder = space.Folder!;
        space.Dispose();
        Assert.False(Directory.Exists(folder));
    }

    /// <summary>A swap file with a flipped bit is not read back (the caller recomputes): counted, named, removed.</summary>
    [Fact]
    public void ACorruptedSwapFileIsRefusedAndRemoved()
    {
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        var cache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("q8_0"));
        using var s = cache.CreateSequence();
        model.Forward(EngineFixtures.MobyPrompt(4000, 80), s, new float[model.Config.VocabSize]);
        using var space = new SwapSpace(cache.Plan, 0, _dir, 64 << 20);
        var ticket = space.TryPut(s.Snapshot())!;
        var file = Directory.GetFiles(space.Folder!).Single();
        var bytes = File.ReadAllBytes(file);
        bytes[bytes.Length / 2] ^= 0x10;
        File.WriteAllBytes(file, bytes);
        Assert.Null(space.TryTake(ticket));
        Assert.Equal(1, space.Unreadable);
        Assert.Contains("checksum", space.LastError!.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(file));
        Assert.Equal(0, space.FileBytes);
    }

    [Fact]
    public void DroppedTicketsFreeTheirBytesAndFiles()
    {
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        var cache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("q4_0"));
        using var s = cache.CreateSequence();
        model.Forward(EngineFixtures.MobyPrompt(4500, 40), s, new float[model.Config.VocabSize]);
        var kv = s.Snapshot();
        using var space = new SwapSpace(cache.Plan, kv.Bytes, _dir, 64 << 20);
        var host = space.TryPut(kv)!;
        var file = space.TryPut(kv)!;
        Assert.Equal(SwapTier.File, file.Tier);
        space.Drop(host);
        space.Drop(file);
        Assert.Equal((0L, 0L), (space.HostBytes, space.FileBytes));
        Assert.Empty(Directory.GetFiles(space.Folder!));
    }

    /// <summary><see cref="PagedKvSequence.SnapshotBytes"/> is exactly the bytes of the copy, for formats with sparse
    /// outlier rows (nuq3-1%), staged recent tokens (kivi2) and sink copies, at odd lengths.</summary>
    [Theory]
    [InlineData("f16", 0, 77)]
    [InlineData("q4_0", 0, 33)]
    [InlineData("kivi2", 0, 101)]
    [InlineData("nuq3-1%", 1, 95)]
    public void SnapshotBytesAreTheCopysBytes(string spec, int sink, int length)
    {
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        var cache = new PagedKvCache(model.KvShape, StorageFixtures.Config(spec, sink));
        using var s = cache.CreateSequence();
        model.Forward(EngineFixtures.MobyPrompt(5000 + length, length), s, new float[model.Config.VocabSize]);
        Assert.Equal(s.Snapshot().Bytes, s.SnapshotBytes);
    }

    /// <summary>Room is checked before the copy is made: a sequence that fits no tier is refused without copying its
    /// blocks (the thread allocates far less than the copy's bytes), is left as it was, and no file is written; one that
    /// fits goes in with the bytes the check counted.</summary>
    [Fact]
    public void NoRoomIsFoundBeforeTheCopyIsMade()
    {
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        var cache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16"));
        using var s = cache.CreateSequence();
        model.Forward(EngineFixtures.MobyPrompt(7000, 120), s, new float[model.Config.VocabSize]);
        long bytes = s.SnapshotBytes;
        int length = s.Length;
        using var space = new SwapSpace(cache.Plan, bytes - 1, _dir, bytes / 2);
        Assert.False(space.HasRoomFor(bytes));
        space.TryPut(s);   // warm up (JIT) before measuring
        long before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Null(space.TryPut(s));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < bytes / 20, $"a refused swap allocated {allocated} bytes; the copy is {bytes}");
        Assert.Equal((0L, 0L, 0L, 2L), (space.ToHost, space.ToFile, space.HostBytes, space.Refused));
        Assert.Null(space.Folder);
        Assert.Equal(length, s.Length);
        using var roomy = new SwapSpace(cache.Plan, bytes);
        var ticket = roomy.TryPut(s)!;
        Assert.Equal((SwapTier.Host, bytes, bytes), (ticket.Tier, ticket.Bytes, roomy.ToHostBytes));
    }

    /// <summary>A file tier whose folder cannot take files is refused when the swap space (or the engine) is made, not
    /// at the first swap: the typed error names the folder.</summary>
    [Fact]
    public void AnUnwritableSwapFolderIsRefusedAtStart()
    {
        var file = Path.Combine(Directory.CreateDirectory(_dir).FullName, "a-file");
        File.WriteAllText(file, "x");
        var under = Path.Combine(file, "swap");
        var plan = Kvq.Cache.Layout.KvLayoutPlan.Build(EngineFixtures.Model(EngineFixtures.Books).KvShape, KvCacheConfig.Parse("f16"));
        var e = Assert.Throws<Kvq.IO.FileWriteException>(() => new SwapSpace(plan, 0, under, 1 << 20));
        Assert.Equal($"cannot write {under}: {file} is a file, not a folder", e.Message);
        var m = EngineFixtures.Books;
        e = Assert.Throws<Kvq.IO.FileWriteException>(() => new InferenceEngine(EngineFixtures.Model(m), m.Tokenizer, new EngineOptions
        {
            Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 1 << 24, Preemption = PreemptionMode.Swap, SwapHostBytes = 0, SwapFileBytes = 1 << 20,
            SwapDirectory = file,
        }));
        Assert.Equal($"cannot write {file}: it is a file, not a folder", e.Message);
        Assert.Equal("x", File.ReadAllText(file));
    }

    [Fact]
    public void BadBudgetsAreRefusedWithTheirNames()
    {
        var plan = Kvq.Cache.Layout.KvLayoutPlan.Build(EngineFixtures.Model(EngineFixtures.Books).KvShape, KvCacheConfig.Parse("f16"));
        Assert.Contains("host budget", Assert.Throws<ArgumentOutOfRangeException>(() => new SwapSpace(plan, -1)).Message, StringComparison.Ordinal);
        Assert.Contains("needs a folder", Assert.Throws<ArgumentOutOfRangeException>(() => new SwapSpace(plan, 1, null, 100)).Message, StringComparison.Ordinal);
        Assert.Contains("host or a file budget", Assert.Throws<ArgumentOutOfRangeException>(() => new SwapSpace(plan, 0)).Message, StringComparison.Ordinal);
        var m = EngineFixtures.Books;
        Assert.Throws<ArgumentException>(() => new InferenceEngine(EngineFixtures.Model(m), m.Tokenizer,
            new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 1 << 24, SwapFileBytes = 1 << 20, SwapDirectory = _dir }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new InferenceEngine(EngineFixtures.Model(m), m.Tokenizer,
            new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 1 << 24, Preemption = PreemptionMode.Swap, SwapHostBytes = -5 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new InferenceEngine(EngineFixtures.Model(m), m.Tokenizer,
            new EngineOptions { Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 1 << 24, Preemption = PreemptionMode.Swap, SwapHostBytes = 0 }));
    }

    /// <summary>Requests under memory pressure, preempted by swapping with no host memory for it (every swap goes to a
    /// file) or room for about one sequence (some in host memory, the rest in files): each gets exactly its lone greedy
    /// tokens; the host bytes never pass their budget; afterwards nothing is held and the folder is gone with the engine.
    /// The engine's swap metrics (<see cref="EngineSnapshot.Swap"/>) account for every preemption the requests saw.
    /// With <paramref name="corrupt"/> the first swap file seen gets a flipped bit: that request is recomputed instead,
    /// with the same tokens.</summary>
    [Theory]
    [InlineData(0L, false)]
    [InlineData(256L * 1024, false)]
    [InlineData(0L, true)]
    public async Task SwappedToFilesRequestsGiveTheirLoneTokens(long hostBytes, bool corrupt)
    {
        var m = EngineFixtures.Books;
        var prompts = Enumerable.Range(0, 8).Select(i => EngineFixtures.MobyPrompt(1000 + 900 * i, 60 + 41 * i % 130)).ToArray();
        int[] maxTokens = prompts.Select((_, i) => 24 + 9 * i % 40).ToArray();
        var expected = prompts.Select((p, i) => EngineFixtures.SoloGreedy(m, p, maxTokens[i])).ToArray();
        // f16 books-19m: 128 KiB a block of 32 tokens. No decode reserve: requests are admitted on their prompts alone, so
        // decodes run out of blocks and preempt.
        using var engine = new InferenceEngine(EngineFixtures.Model(m, 96), m.Tokenizer, new EngineOptions
        {
            Kv = KvCacheConfig.Parse("f16"), KvBudgetBytes = 20 * 128 * 1024, StepTokens = 96, DecodeReserveTokens = 0, Preemption = PreemptionMode.Swap,
            SwapHostBytes = hostBytes, SwapFileBytes = 64 << 20, SwapDirectory = _dir,
        });
        var swap = engine.Swap!;
        var violations = new ConcurrentBag<string>();
        bool corrupted = false;
        var filesSeen = new Dictionary<string, long>();   // every swap file seen after a step, with its length
        engine.StepCompleted += s =>
        {
            if (swap.Folder is { } seen)
                foreach (var file in Directory.GetFiles(seen)) filesSeen.TryAdd(Path.GetFileName(file), new FileInfo(file).Length);
            if (s.Swap.HeldHostBytes != swap.HostBytes || s.Swap.HeldFileBytes != swap.FileBytes)
                violations.Add($"step {s.Step}: the snapshot holds {s.Swap.HeldHostBytes}/{s.Swap.HeldFileBytes} bytes, the swap space {swap.HostBytes}/{swap.FileBytes}");
            if (swap.HostBytes > hostBytes) violations.Add($"step {s.Step}: {swap.HostBytes} host bytes > {hostBytes}");
            if (swap.FileBytes != FilesBytes(swap.Folder)) violations.Add($"step {s.Step}: {swap.FileBytes} file bytes counted, {FilesBytes(swap.Folder)} on disk");
            if (corrupt && !corrupted && swap.Folder is { } folder && Directory.GetFiles(folder).FirstOrDefault() is { } f)
            {
                var bytes = File.ReadAllBytes(f);
                bytes[^40] ^= 1;
                File.WriteAllBytes(f, bytes);
                corrupted = true;
            }
        };
        var results = await Task.WhenAll(prompts.Select((p, i) => EngineFixtures.Collect(engine.Submit(EngineFixtures.Greedy(p, maxTokens[i], priority: i % 3)))));
        Assert.Empty(violations);
        for (int i = 0; i < prompts.Length; i++)
            Assert.True(expected[i].SequenceEqual(results[i].Tokens),
                $"request {i} (preempted {results[i].Preemptions}x): expected [{string.Join(",", expected[i])}], got [{string.Join(",", results[i].Tokens)}]");
        // With no host memory every swap is a file; with room for 2 blocks, those swapped at 3 blocks (the most seen
        // here) are (which ones swap depends on when requests arrive between steps: the mix is checked exactly in
        // SequencesSwappedToHostAndFileComeBackExactly).
        string tiers = $"{swap.ToHost} to host (peak {swap.PeakHostBytes} bytes), {swap.ToFile} to files, {swap.Refused} refused";
        Assert.True(hostBytes == 0 ? swap.ToFile > 0 && swap.ToHost == 0 : swap.ToHost + swap.ToFile > 0, "meant to swap: " + tiers);
        Assert.Equal(corrupt ? 1 : 0, swap.Unreadable);
        Assert.Equal(swap.ToHost + swap.ToFile - swap.Unreadable, swap.Restored);
        Assert.Equal((0L, 0L), (swap.HostBytes, swap.FileBytes));
        Assert.True(swap.PeakHostBytes <= hostBytes);

        // The engine's metrics say what happened: each preemption the requests saw was a swap to host memory or a file
        // or a recompute; the files swapped out are the files seen on disk (count and bytes); each swapped sequence came
        // back but the corrupted one, which is the one recompute.
        var snap = engine.Snapshot();
        var w = snap.Swap;
        long preempted = results.Sum(r => (long)r.Preemptions);
        Assert.Equal(preempted, snap.Preemptions);
        Assert.Equal(preempted, w.OutHost + w.OutFile + w.Recomputes - swap.Unreadable);
        Assert.Equal((swap.ToHost, swap.ToFile, swap.ToHostBytes, swap.ToFileBytes), (w.OutHost, w.OutFile, w.OutHostBytes, w.OutFileBytes));
        // Files seen between steps are some of those counted (a file can be written and taken back within one plan).
        Assert.InRange(filesSeen.Count, w.OutFile > 0 ? 1 : 0, w.OutFile);
        Assert.InRange(filesSeen.Values.Sum(), w.OutFile > 0 ? 1 : 0, w.OutFileBytes);
        if (hostBytes == 0) Assert.Equal(0, w.OutHostBytes);
        Assert.Equal(w.OutHost, w.InHost);
        Assert.Equal(w.OutHostBytes, w.InHostBytes);
        Assert.Equal(w.OutFile - (corrupt ? 1 : 0), w.InFile);
        Assert.Equal(corrupt ? 1 : 0, w.Recomputes);
        if (!corrupt) Assert.Equal(w.OutFileBytes, w.InFileBytes);
        else Assert.True(w.InFileBytes < w.OutFileBytes);
        Assert.Equal((0L, 0L), (w.HeldHostBytes, w.HeldFileBytes));
        Assert.Empty(Directory.GetFiles(swap.Folder!));
        engine.Dispose();
        Assert.False(Directory.Exists(swap.Folder));
    }
}
