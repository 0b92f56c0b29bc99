using System.Diagnostics;
using Kvq.Cache;
using Kvq.Cache.Storage;
using Kvq.Tests.Serving;

namespace Kvq.Tests.Cache.Storage;

/// <summary>What a killed process leaves in --swap-dir / --disk-prefix-dir is swept when the next swap space or prefix
/// disk tier starts (<see cref="SpillFolder.Sweep"/>): only our own files in folders named as ours whose owner is dead;
/// a live owner's folder (its lock held), a folder or file named otherwise, and a user's file inside one of ours stay.</summary>
public sealed class SpillFolderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-spill-sweep-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>The PID of a process that has exited (a real one: started, waited for).</summary>
    private static int DeadPid()
    {
        using var p = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        p.WaitForExit();
        return p.Id;
    }

    /// <summary>A folder as a killed owner leaves it: its files, a half-written temp file, and (new layout) its lock file.</summary>
    private string Leftover(string prefix, int pid, bool withLock, params string[] files)
    {
        var path = Path.Combine(_dir, $"{prefix}-{pid}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(path);
        foreach (var f in files) File.WriteAllBytes(Path.Combine(path, f), new byte[100 + f.Length]);
        if (withLock) File.WriteAllBytes(path + ".lock", []);
        return path;
    }

    [Fact]
    public void OnlyDeadOwnersFilesNamedAsOursAreSwept()
    {
        int dead = DeadPid();
        var tmp = $".seq-3.kvqswap.{dead}.{Guid.NewGuid():N}.tmp";
        var unlockedWithLock = Leftover("kvq-swap", dead, withLock: true, "seq-0.kvqswap", "seq-1.kvqswap", tmp);
        var oldLayout = Leftover("kvq-swap", dead, withLock: false, "seq-7.kvqswap");
        // A user's own file put in one of our folders: it and the folder stay, our files beside it go.
        var withUserFile = Leftover("kvq-swap", dead, withLock: true, "seq-2.kvqswap", "notes.txt", "seq-2.kvqswap.bak");
        // Our own PID and no lock file: no lock to ask, and the PID lives: it stays.
        var liveNoLock = Leftover("kvq-swap", Environment.ProcessId, withLock: false, "seq-0.kvqswap");
        // A live owner: its lock is held.
        var heldPath = Leftover("kvq-swap", dead, withLock: true, "seq-0.kvqswap");
        using var held = new FileStream(heldPath + ".lock", FileMode.Open, FileAccess.ReadWrite, FileShare.None);
        // Named otherwise: another prefix, not 32 hex digits, our file name loose in the root.
        var otherPrefix = Leftover("kvq-prefix", dead, withLock: true, "seq-0.kvqswap");
        var notOurs = Path.Combine(_dir, $"kvq-swap-{dead}-notahexguid");
        Directory.CreateDirectory(notOurs);
        File.WriteAllText(Path.Combine(notOurs, "seq-0.kvqswap"), "user data");
        File.WriteAllText(Path.Combine(_dir, "seq-9.kvqswap"), "user data");

        var (files, folders) = SpillFolder.Sweep(_dir, SwapSpace.FolderPrefix, SwapSpace.FileName);

        Assert.False(Directory.Exists(unlockedWithLock));
        Assert.False(File.Exists(unlockedWithLock + ".lock"));
        Assert.False(Directory.Exists(oldLayout));
        Assert.Equal(new[] { "notes.txt", "seq-2.kvqswap.bak" }, Directory.GetFiles(withUserFile).Select(f => Path.GetFileName(f)).Order().ToArray());
        Assert.True(File.Exists(withUserFile + ".lock"), "a folder that stays keeps its lock file");
        Assert.True(File.Exists(Path.Combine(liveNoLock, "seq-0.kvqswap")));
        Assert.True(File.Exists(Path.Combine(heldPath, "seq-0.kvqswap")));
        Assert.True(File.Exists(Path.Combine(otherPrefix, "seq-0.kvqswap")));
        Assert.Equal("user data", File.ReadAllText(Path.Combine(notOurs, "seq-0.kvqswap")));
        Assert.True(File.Exists(Path.Combine(_dir, "seq-9.kvqswap")));
        Assert.Equal((5, 2), (files, folders));
    }

    /// <summary>Through the tiers themselves: a live swap space's folder (files written, lock held) survives the sweep a
    /// second swap space makes at its start; a dead owner's swap folder and prefix folder are swept by the tier of their
    /// kind only; and a prefix tier pointed at the same folder leaves the swap files alone.</summary>
    [Fact]
    public void TiersSweepTheirOwnKindAtStartAndSpareLiveOnes()
    {
        var model = EngineFixtures.Model(EngineFixtures.Books, 256);
        var cache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("q8_0"));
        using var s = cache.CreateSequence();
        model.Forward(EngineFixtures.MobyPrompt(2000, 40), s, new float[model.Config.VocabSize]);
        using var live = new SwapSpace(cache.Plan, 0, _dir, 64 << 20);
        Assert.NotNull(live.TryPut(s.Snapshot()));
        var liveFile = Directory.GetFiles(live.Folder!).Single();
        int dead = DeadPid();
        var deadSwap = Leftover("kvq-swap", dead, withLock: true, "seq-0.kvqswap", "seq-1.kvqswap");
        var deadPrefix = Leftover("kvq-prefix", dead, withLock: true, "block-0.kvqblk", "block-5.kvqblk", "block-6.kvqblk");

        using (var prefix = new PrefixFileTier(cache.Plan, _dir, 1 << 20))
        {
            Assert.Equal(3, prefix.SweptFiles);
            Assert.False(Directory.Exists(deadPrefix));
            Assert.True(Directory.Exists(deadSwap));
        }
        using var second = new SwapSpace(cache.Plan, 0, _dir, 64 << 20);
        Assert.Equal(2, second.SweptFiles);
        Assert.False(Directory.Exists(deadSwap));
        Assert.True(File.Exists(liveFile), "the live swap space's file was swept");
        Assert.True(File.Exists(live.Folder! + ".lock"));
        string folder = live.Folder!;
        live.Dispose();
        Assert.False(Directory.Exists(folder));
        Assert.False(File.Exists(folder + ".lock"));
    }
}
