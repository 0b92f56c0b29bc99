using Kvq.Formats;
using Kvq.Formats.Gguf.Synthetic;
using Kvq.Tensors;

// Writes the synthetic random-weight GGUFs of SyntheticModels (every architecture Kvq reads) into a folder.
// Usage: SynthModels OUT_DIR [--spm-vocab FILE.gguf] [--types f32,q8_0,q4_0] [--only NAME,NAME]
if (args.Length == 0 || args[0].StartsWith('-'))
{
    Console.Error.WriteLine("usage: SynthModels OUT_DIR [--spm-vocab FILE.gguf] [--types f32,q8_0,q4_0] [--only NAME,...]");
    Console.Error.WriteLine($"models: {string.Join(", ", SyntheticModels.Names)}");
    return 2;
}
string outDir = args[0];
string? spm = null;
var types = new List<GgmlType> { GgmlType.F32 };
IReadOnlyList<string> names = SyntheticModels.Names;
for (int i = 1; i < args.Length; i++)
{
    string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
    switch (args[i])
    {
        case "--spm-vocab": spm = Next(); break;
        case "--types":
            types = Next().Split(',').Select(t => Enum.TryParse<GgmlType>(t, ignoreCase: true, out var g) ? g
                : throw new ArgumentException($"unknown weight type '{t}'")).ToList();
            break;
        case "--only": names = Next().Split(','); break;
        default:
            Console.Error.WriteLine($"SynthModels: unknown option '{args[i]}'");
            return 2;
    }
}
try
{
    // The SentencePiece vocabulary defaults to stories260K's, found beside the repository as the tests find it.
    spm ??= FindShared("models/stories260K.gguf");
    var vocabs = new SyntheticVocabularies(new CopiedVocabulary(spm));
    foreach (var name in names)
        foreach (var type in types)
        {
            var path = SyntheticModelWriter.Write(SyntheticModels.Create(name, vocabs, type), outDir);
            Console.WriteLine($"{path}  {new FileInfo(path).Length / 1024.0:F0} KiB");
        }
    return 0;
}
catch (Exception e) when (e is ArgumentException or ModelFormatException or IOException)
{
    Console.Error.WriteLine($"SynthModels: {e.Message}");
    return 2;
}

static string FindShared(string relative)
{
    var env = Environment.GetEnvironmentVariable("KVQ_SHARED");
    if (!string.IsNullOrEmpty(env)) return Path.Combine(env, relative);
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
    {
        var candidate = Path.Combine(dir.FullName, "shared", relative);
        if (File.Exists(candidate)) return candidate;
    }
    throw new ArgumentException($"shared/{relative} not found beside the repository; pass --spm-vocab or set KVQ_SHARED");
}
