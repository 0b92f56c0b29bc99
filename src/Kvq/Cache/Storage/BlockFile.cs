using System.IO.MemoryMappedFiles;

namespace Kvq.Cache.Storage;

/// <summary>
/// The file tier: one arena's chunks in a temporary file, memory-mapped, so the operating system keeps the blocks
/// attention reads in RAM and may write cold ones out (offloaded attention reads a budget of blocks per step). Each
/// chunk is written with zeros before it is mapped, so a full disk is an <see cref="IOException"/> when the chunk is
/// taken, never a fault later when a mapped page is first touched. On Unix the file is unlinked as soon as it is open
/// (its blocks live on while the handle and the maps do, and the kernel frees them however the process ends: exit,
/// Ctrl-C, a kill); .NET's DeleteOnClose alone left the files behind, since a process's exit runs no finalizers. On
/// Windows, where an open file cannot be unlinked, DeleteOnClose is the operating system's and removes it at exit.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001",
    Justification = "The file lives as long as its cache's arena; the handle's close (or the process's end) frees it.")]
public sealed unsafe class BlockFile
{
    private readonly FileStream _file;
    private readonly List<(MemoryMappedFile Map, MemoryMappedViewAccessor View, IntPtr Pointer)> _chunks = [];

    public string Path { get; }

    internal BlockFile(string directory)
    {
        Directory.CreateDirectory(directory);
        Path = System.IO.Path.Combine(directory, $"kvq-blocks-{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        _file = new FileStream(Path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16,
            OperatingSystem.IsWindows() ? FileOptions.DeleteOnClose : FileOptions.None);
        if (!OperatingSystem.IsWindows()) File.Delete(Path);
    }

    /// <summary>Bytes the file holds (every chunk taken so far).</summary>
    internal long Length => _file.Length;

    /// <summary>Appends a zeroed chunk of <paramref name="bytes"/> and returns where it is mapped.</summary>
    /// <exception cref="IOException">The disk has no room for it (the message names the file).</exception>
    internal byte* AddChunk(long bytes)
    {
        long offset = _file.Length;
        try
        {
            _file.Position = offset;
            var zeros = new byte[Math.Min(bytes, 1 << 20)];
            for (long left = bytes; left > 0; left -= zeros.Length) _file.Write(zeros, 0, (int)Math.Min(zeros.Length, left));
            _file.Flush();
        }
        catch (IOException e)
        {
            _file.SetLength(offset);
            throw new IOException($"KV block file {Path}: no room for {bytes:N0} more bytes past {offset:N0}: {e.Message}", e);
        }
        var map = MemoryMappedFile.CreateFromFile(_file, null, offset + bytes, MemoryMappedFileAccess.ReadWrite, HandleInheritability.None, leaveOpen: true);
        var view = map.CreateViewAccessor(offset, bytes);
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        var at = p + view.PointerOffset;
        _chunks.Add((map, view, (IntPtr)at));
        return at;
    }
}
