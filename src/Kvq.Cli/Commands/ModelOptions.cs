using System.CommandLine;
using Kvq.Model;

namespace Kvq.Cli.Commands;

/// <summary>--model and --tokenizer for every command that loads a model: resolves the default model, loads it by its
/// content (GGUF, llama2.c, Hugging Face folder) and says on stderr what the loader decided on its own (notes).</summary>
public sealed class ModelOptions
{
    public Option<string?> Model { get; } = CommonOptions.Model();
    public Option<string?> Tokenizer { get; } = new("--tokenizer")
    {
        Description = "tokenizer file for a llama2.c checkpoint (default: tok<vocab>.bin or tokenizer.bin beside it), or a tokenizer.json for a Hugging Face folder",
    };

    public void AddTo(Command cmd)
    {
        cmd.Add(Model);
        cmd.Add(Tokenizer);
    }

    /// <summary>The model file or folder to load (given and existing, else the default).</summary>
    public string Path(ParseResult r) => DefaultPaths.ResolveModel(r.GetValue(Model));

    public LoadedModel Load(ParseResult r) => Load(Path(r), r.GetValue(Tokenizer));

    public static LoadedModel Load(string path, string? tokenizer)
    {
        if (tokenizer != null && !File.Exists(tokenizer)) throw new CliException($"--tokenizer {tokenizer}: file not found");
        var loaded = ModelLoader.Load(path, tokenizer);
        foreach (var note in loaded.Weights.Notes) Console.Error.WriteLine($"kvq: note: {note}");
        return loaded;
    }
}
