namespace Kvq.Tests;

/// <summary>Finds the shared fixtures (models, text) beside the repository, or where KVQ_SHARED points.</summary>
public static class Fixtures
{
    private static readonly Lazy<string> Root = new(Find);

    public static string SharedDir => Root.Value;
    public static string Model(string file) => Path.Combine(SharedDir, "models", file);
    public static string Text(string relative) => Path.Combine(SharedDir, "text", relative);

    public static string BooksGguf => Model("books-19m.gguf");
    public static string StoriesGguf => Model("stories260K.gguf");
    public static string StoriesBin => Model("stories260K.bin");
    public static string StoriesTokenizerBin => Model("tok512.bin");
    public static string MobyDick => Text("books/pg2489_moby_dick.txt");

    private static string Find()
    {
        var env = Environment.GetEnvironmentVariable("KVQ_SHARED");
        if (!string.IsNullOrEmpty(env))
            return Directory.Exists(Path.Combine(env, "models")) ? env
                : throw new DirectoryNotFoundException($"KVQ_SHARED={env} has no models/ folder");
        // Walk up from the test binary to the folder that holds both the repo and shared/.
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared");
            if (Directory.Exists(Path.Combine(candidate, "models"))) return candidate;
        }
        throw new DirectoryNotFoundException(
            "fixtures not found: expected a 'shared/models' folder beside the repository, or set KVQ_SHARED");
    }
}
