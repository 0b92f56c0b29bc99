namespace Kvq.Formats.Safetensors;

/// <summary>The open .safetensors files of one model; owns their maps (<c>ModelWeights.Owner</c>).</summary>
internal sealed class SafetensorsFileSet : IDisposable
{
    private readonly List<SafetensorsFile> _files = [];

    public IReadOnlyList<SafetensorsFile> Files => _files;

    public void Add(SafetensorsFile file) => _files.Add(file);

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}
