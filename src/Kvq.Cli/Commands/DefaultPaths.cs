namespace Kvq.Cli.Commands;

/// <summary>Where the default model lives: $KVQ_SHARED, else a 'shared' folder beside the working directory or above the tool.</summary>
public static class DefaultPaths
{
    public const string DefaultModelFile = "books-19m.gguf";
    public const string DefaultBookFile = "books/pg2489_moby_dick.txt";

    /// <summary>A text under shared/text (used when --text is not given).</summary>
    public static string ResolveText(string relative)
    {
        foreach (var dir in SharedCandidates())
        {
            var p = Path.Combine(dir, "text", relative);
            if (File.Exists(p)) return p;
        }
        throw new CliException($"no --text given and the default {relative} was not found in ../shared/text (set KVQ_SHARED)");
    }

    public static string ResolveModel(string? given)
    {
        if (!string.IsNullOrEmpty(given))
        {
            if (File.Exists(given) || Directory.Exists(given)) return given;
            throw new CliException(Formats.ModelSniffer.Missing(given).Message.Replace("model file not found", "model not found"));
        }
        foreach (var dir in SharedCandidates())
        {
            var p = Path.Combine(dir, "models", DefaultModelFile);
            if (File.Exists(p)) return p;
        }
        throw new CliException($"no --model given and the default {DefaultModelFile} was not found in ../shared/models (set KVQ_SHARED)");
    }

    private static IEnumerable<string> SharedCandidates()
    {
        var env = Environment.GetEnvironmentVariable("KVQ_SHARED");
        if (!string.IsNullOrEmpty(env)) yield return env;
        yield return Path.Combine(Directory.GetCurrentDirectory(), "..", "shared");
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            yield return Path.Combine(d.FullName, "shared");
    }
}
