namespace Kvq.IO;

/// <summary>A file could not be written (no permission, a folder in the way, a parent that is a file, a full disk).
/// The message names the file the caller asked for and why, never the temporary sibling it was written through.</summary>
public sealed class FileWriteException(string path, string reason, Exception? inner = null)
    : IOException($"cannot write {path}: {reason}", inner)
{
    public string FilePath { get; } = path;
}
