namespace Kvq.Formats;

/// <summary>
/// A model or profile file that cannot be used: names the file, the item (header field, key, tensor) and the byte
/// offset where the problem was found, with what was expected and what was found.
/// </summary>
public sealed class ModelFormatException : Exception
{
    public string FilePath { get; }
    public string Item { get; }
    public long Offset { get; }

    public ModelFormatException(string filePath, string item, long offset, string message, Exception? inner = null)
        : base($"{Path.GetFileName(filePath)}: {item} at offset {offset}: {message}", inner)
    {
        FilePath = filePath;
        Item = item;
        Offset = offset;
    }
}
