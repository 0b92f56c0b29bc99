namespace Kvq.IO;

/// <summary>Writes files so that a reader never sees a half-written file: write a sibling temp file, then rename.
/// A file that cannot be written is a <see cref="FileWriteException"/> naming it; the temp file never stays behind.</summary>
public static class AtomicFile
{
    /// <exception cref="FileWriteException">The file or its folder cannot be written.</exception>
    public static void Write(string path, Action<Stream> write) => Write(path, write, flushToDisk: true);

    /// <param name="flushToDisk">False for files that live only as long as the process (spill tiers, removed when
    /// their owner is disposed): the rename still means a reader never sees half a file, without an fsync per file.</param>
    /// <exception cref="FileWriteException">The file or its folder cannot be written.</exception>
    public static void Write(string path, Action<Stream> write, bool flushToDisk)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            if (Directory.Exists(full)) throw new FileWriteException(full, "it is a folder");
            Directory.CreateDirectory(dir);
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch (Exception e) when (e is (IOException or UnauthorizedAccessException) and not FileWriteException)
        {
            throw new FileWriteException(full, Reason(full, e, tmp), e);
        }
        finally
        {
            try
            {
                if (File.Exists(tmp)) File.Delete(tmp);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Nothing was created there (or it cannot be removed): the write's own error says why.
            }
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, s => { using var w = new StreamWriter(s, leaveOpen: true); w.Write(text); });

    /// <summary>Checks, before long work, that <paramref name="path"/> can be written later by <see cref="Write"/>:
    /// it is not a folder, the nearest existing folder above it is a folder, and a file can be created there (a probe
    /// file, removed at once). Creates nothing that stays.</summary>
    /// <exception cref="FileWriteException">It cannot be written.</exception>
    public static void CheckWritable(string path)
    {
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new FileWriteException(full, "it is a folder");
        Probe(full, Path.GetDirectoryName(full)!);
    }

    /// <summary>The same for a folder that files will be written into (made if missing): it is not a file, nor under
    /// one, and a file can be created in it or in its nearest existing parent. Creates nothing that stays.</summary>
    /// <exception cref="FileWriteException">Files cannot be written there.</exception>
    public static void CheckWritableFolder(string folder)
    {
        var full = Path.GetFullPath(folder);
        if (File.Exists(full)) throw new FileWriteException(full, "it is a file, not a folder");
        Probe(full, full);
    }

    /// <summary>Creates and removes a probe file in <paramref name="dir"/>, or in its nearest existing parent.</summary>
    private static void Probe(string full, string dir)
    {
        var existing = dir;
        while (!Directory.Exists(existing))
        {
            if (File.Exists(existing)) throw new FileWriteException(full, $"{existing} is a file, not a folder");
            existing = Path.GetDirectoryName(existing)!;
        }
        var probe = Path.Combine(existing, $".kvq-probe.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FileWriteException(full, Reason(full, e, probe), e);
        }
        finally
        {
            if (File.Exists(probe)) File.Delete(probe);
        }
    }

    /// <summary>Why writing <paramref name="full"/> failed, in terms of the paths the user gave (not the temp file).</summary>
    private static string Reason(string full, Exception e, string tmp)
    {
        // The folder the file was to be made in: for a folder target (CheckWritableFolder) that is the target itself,
        // which exists and is no reason ("cannot write /sys: it is a folder" was said of every read-only folder).
        var where = Path.TrimEndingDirectorySeparator(Path.GetDirectoryName(tmp)!);
        if (Directory.Exists(full) && Path.TrimEndingDirectorySeparator(full) != where) return "it is a folder";
        for (var d = Path.GetDirectoryName(full); d != null; d = Path.GetDirectoryName(d))
        {
            if (Directory.Exists(d)) break;
            if (File.Exists(d)) return $"{d} is a file, not a folder";
        }
        if (e is UnauthorizedAccessException) return $"permission denied in {where}";
        return e.Message.Replace(tmp, full, StringComparison.Ordinal);
    }
}
