using Kvq.Chat;
using Kvq.Formats;
using Kvq.Formats.Gguf;
using Kvq.Model.Loading;
using Kvq.Tokenizers;

namespace Kvq.Model;

/// <summary>The front door for model files: picks the reader by what the file holds (<see cref="ModelSniffer"/>, never
/// by its name), and the tokenizer and chat template that go with it.</summary>
public static class ModelLoader
{
    /// <param name="path">A .gguf file, a llama2.c .bin checkpoint (tokenizer: <paramref name="tokenizerPath"/>, else
    /// tok*.bin or tokenizer.bin beside it), or a Hugging Face folder (config.json, safetensors weights and
    /// tokenizer.json, or the tokenizer.json at <paramref name="tokenizerPath"/>; tokenizer_config.json if present).</param>
    public static LoadedModel Load(string path, string? tokenizerPath = null)
    {
        var sniffed = ModelSniffer.Detect(path);
        return sniffed.Format switch
        {
            ModelFormat.HuggingFaceFolder => LoadFolder(sniffed.Path, tokenizerPath),
            ModelFormat.Gguf => LoadGguf(sniffed.Path, tokenizerPath),
            _ => LoadLlama2c(sniffed.Path, tokenizerPath),
        };
    }

    private static LoadedModel LoadFolder(string dir, string? tokenizerPath)
    {
        // The tokenizer first: it is quick to read and checks the folder's config before the weights are mapped.
        var info = SafetensorsLoader.ReadInfo(dir);
        var tokenizer = SafetensorsLoader.LoadTokenizer(info, tokenizerPath);
        var chatTemplate = ChatTemplates.FromHfFolder(info.Directory, info.TokenizerConfigPath);
        return new LoadedModel(SafetensorsLoader.Load(dir), tokenizer, chatTemplate);
    }

    private static LoadedModel LoadGguf(string path, string? tokenizerPath)
    {
        if (tokenizerPath != null)
            throw new ArgumentException($"{Path.GetFileName(path)} is a GGUF file, which carries its own tokenizer: a separate tokenizer ({tokenizerPath}) is not used");
        var gguf = GgufFile.Open(path);
        try
        {
            var tokenizer = TokenizerFactory.FromGguf(gguf);
            var chatTemplate = ChatTemplates.FromGguf(gguf);
            return new LoadedModel(GgufModelLoader.Load(gguf), tokenizer, chatTemplate);
        }
        catch
        {
            gguf.Dispose();
            throw;
        }
    }

    private static LoadedModel LoadLlama2c(string path, string? tokenizerPath)
    {
        var weights = Llama2cLoader.Load(path);
        try
        {
            if (tokenizerPath != null && !File.Exists(tokenizerPath))
                throw new FileNotFoundException($"tokenizer not found: {tokenizerPath}", tokenizerPath);
            var tok = tokenizerPath ?? FindLlama2cTokenizer(path)
                ?? throw new FileNotFoundException(
                    $"no tokenizer found beside {path} (expected tok{weights.Config.VocabSize}.bin or tokenizer.bin there): " +
                    "give its path (kvq: --tokenizer FILE)");
            return new LoadedModel(weights, Llama2cTokenizer.Load(tok, weights.Config.VocabSize));
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>tok{vocab}.bin or tokenizer.bin beside the checkpoint, else (for a symbolic link) beside its target.</summary>
    private static string? FindLlama2cTokenizer(string checkpoint)
    {
        var vocab = Llama2cLoader.ReadHeader(checkpoint).VocabSize;
        var dirs = new[] { Path.GetFullPath(checkpoint), MappedFile.ResolveLinks(checkpoint).FullName }
            .Select(p => Path.GetDirectoryName(p)!).Distinct(StringComparer.Ordinal);
        foreach (var dir in dirs)
            foreach (var name in new[] { $"tok{vocab}.bin", "tokenizer.bin" })
            {
                var p = Path.Combine(dir, name);
                if (File.Exists(p)) return p;
            }
        return null;
    }
}
