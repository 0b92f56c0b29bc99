using System.IO.MemoryMappedFiles;

namespace Kvq.Formats;

/// <summary>A read-only memory map of a whole file; weights are read in place, never copied. A symbolic link is
/// followed to its final target (as in a Hugging Face cache, where snapshots/ links into blobs/): the length and the
/// mapping are the target's, while <see cref="Path"/> stays the name the caller gave (errors name what the user typed).</summary>
public sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _ptr;

    public string Path { get; }
    public long Length { get; }
    public byte* Pointer => _ptr != null ? _ptr : throw new ObjectDisposedException(Path);

    public MappedFile(string path)
    {
        Path = path;
        var info = ResolveLinks(path);
        if (!info.Exists) throw new FileNotFoundException($"model file not found: {path}", path);
        Length = info.Length;
        if (Length == 0) throw new ModelFormatException(path, "file", 0, "the file is empty");
        _map = MemoryMappedFile.CreateFromFile(info.FullName, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _ptr = p + _view.PointerOffset;
    }

    /// <summary>The file itself, or for a symbolic link (or a chain of them) the file it finally points at; a link
    /// whose target is missing says so.</summary>
    public static FileInfo ResolveLinks(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget == null) return info;
        var target = info.ResolveLinkTarget(returnFinalTarget: true);
        if (target is not FileInfo file || !file.Exists)
            throw new FileNotFoundException($"{path} is a symbolic link to {info.LinkTarget}, which does not exist", path);
        return file;
    }

    /// <summary>Bytes [offset, offset+length) of the file; the caller has checked the range.</summary>
    public ReadOnlySpan<byte> Span(long offset, int length) => new(Pointer + offset, length);

    public void Dispose()
    {
        if (_ptr == null) return;
        _ptr = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
