namespace Kvq.IO;

/// <summary>Writes files so that a reader never sees a half-written file: write a sibling temp file, then rename.</summary>
public static class AtomicFile
{
    public static void Write(string path, Action<Stream> write) => Write(path, write, flushToDisk: true);

    /// <param name="flushToDisk">False for files that live only as long as the process (spill tiers, removed when
    /// their owner is disposed): the rename still means a reader never sees half a file, without an fsync per file.</param>
    public static void Write(string path, Action<Stream> write, bool flushToDisk)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk);
            }
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, s => { using var w = new StreamWriter(s, leaveOpen: true); w.Write(text); });
}
