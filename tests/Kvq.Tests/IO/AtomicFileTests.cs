using Kvq.IO;

namespace Kvq.Tests.IO;

/// <summary>AtomicFile when the file cannot be written: a <see cref="FileWriteException"/> naming the file the caller
/// gave and why (never the temporary sibling), no temporary file left behind, and CheckWritable creating nothing.</summary>
public sealed class AtomicFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-atomicfile-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static void WriteBytes(string path) => AtomicFile.Write(path, s => s.Write(new byte[] { 1, 2, 3 }));

    private string[] Leftovers() => Directory.GetFiles(_dir, "*.tmp", SearchOption.AllDirectories);

    [Fact]
    public void AFolderInTheWayIsATypedErrorNamingIt()
    {
        var folder = Directory.CreateDirectory(Path.Combine(_dir, "profile.kvqp")).FullName;
        var e = Assert.Throws<FileWriteException>(() => WriteBytes(folder));
        Assert.Equal($"cannot write {folder}: it is a folder", e.Message);
        Assert.Equal($"cannot write {folder}: it is a folder", Assert.Throws<FileWriteException>(() => AtomicFile.CheckWritable(folder)).Message);
        Assert.Empty(Leftovers());
    }

    [Fact]
    public void AFileWhereAFolderShouldBeIsATypedErrorNamingIt()
    {
        var file = Path.Combine(_dir, "notes.txt");
        File.WriteAllText(file, "a file, not a folder");
        var target = Path.Combine(file, "sub", "s.kvqs");
        var e = Assert.Throws<FileWriteException>(() => WriteBytes(target));
        Assert.Equal($"cannot write {target}: {file} is a file, not a folder", e.Message);
        Assert.Equal(e.Message, Assert.Throws<FileWriteException>(() => AtomicFile.CheckWritable(target)).Message);
        Assert.Equal("a file, not a folder", File.ReadAllText(file));
        Assert.Empty(Leftovers());
    }

    [LinuxFact("sysfs refuses new files even to root, so the test needs no unprivileged user")]
    public void APlaceWithoutPermissionNamesTheFileNotTheTemporaryOne()
    {
        var target = "/sys/kvq-atomicfile-test.kvqp";
        var e = Assert.Throws<FileWriteException>(() => WriteBytes(target));
        Assert.StartsWith($"cannot write {target}: ", e.Message);
        Assert.DoesNotContain(".tmp", e.Message);
        Assert.StartsWith($"cannot write {target}: ", Assert.Throws<FileWriteException>(() => AtomicFile.CheckWritable(target)).Message);
    }

    /// <summary>A folder that exists but takes no files (sysfs, a read-only mount) is refused for its permission, not
    /// for being a folder: "cannot write /sys: it is a folder" was said for --offload-dir, --swap-dir, --prompt-cache.</summary>
    [LinuxFact("sysfs refuses new files even to root, so the test needs no unprivileged user")]
    public void AFolderWithoutPermissionIsRefusedForThatNotForBeingAFolder()
    {
        var e = Assert.Throws<FileWriteException>(() => AtomicFile.CheckWritableFolder("/sys"));
        Assert.Equal("cannot write /sys: permission denied in /sys", e.Message);
        // Under it, a folder to be made: the nearest existing one is named.
        Assert.Equal("cannot write /sys/kvq-test/blocks: permission denied in /sys",
            Assert.Throws<FileWriteException>(() => AtomicFile.CheckWritableFolder("/sys/kvq-test/blocks")).Message);
    }

    [Fact]
    public void CheckWritableCreatesNothingAndWriteThenCreatesTheFolders()
    {
        var target = Path.Combine(_dir, "a", "b", "p.kvqp");
        AtomicFile.CheckWritable(target);
        Assert.Empty(Directory.GetFileSystemEntries(_dir));
        WriteBytes(target);
        Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(target));
        Assert.Empty(Leftovers());
    }

    [Fact]
    public void AFailedWriteLeavesTheOldFileWhole()
    {
        var target = Path.Combine(_dir, "p.kvqp");
        File.WriteAllBytes(target, [9, 9]);
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(target, s =>
        {
            s.Write(new byte[] { 1 });
            throw new InvalidOperationException("the writer failed half-way");
        }));
        Assert.Equal(new byte[] { 9, 9 }, File.ReadAllBytes(target));
        Assert.Empty(Leftovers());
    }
}
