using Kvq.Chat;
using Kvq.Formats.Gguf;
using Kvq.Formats.Llama2c;
using Kvq.Formats.Safetensors;
using Kvq.Tokenizers;
using Kvq.Tokenizers.HuggingFace;

namespace Kvq.Model;

/// <summary>The front door for model files: picks the reader by what the path is, and the tokenizer and chat template
/// that go with it.</summary>
public static class ModelLoader
{
    /// <param name="path">A .gguf file, a llama2.c .bin checkpoint (tokenizer: <paramref name="tokenizerPath"/>, else
    /// tok*.bin or tokenizer.bin beside it), or a Hugging Face folder (config.json, safetensors weights and
    /// tokenizer.json, or the tokenizer.json at <paramref name="tokenizerPath"/>; tokenizer_config.json if present).</param>
    public static LoadedModel Load(string path, string? tokenizerPath = null)
    {
        if (Directory.Exists(path))
        {
            // The tokenizer first: it is quick to read and checks the folder's config before the weights are mapped.
            var info = SafetensorsLoader.ReadInfo(path);
            var tokenizer = HfTokenizerLoader.Load(info, tokenizerPath);
            var chatTemplate = ChatTemplates.FromHfFolder(info.Directory, info.TokenizerConfigPath);
            return new LoadedModel(SafetensorsLoader.Load(path), tokenizer, chatTemplate);
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"model file not found: {path}", path);
        if (IsGguf(path))
        {
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
        var weights = Llama2cLoader.Load(path);
        try
        {
            var tok = tokenizerPath ?? FindLlama2cTokenizer(path)
                ?? throw new FileNotFoundException($"no tokenizer found beside {path} (expected tok*.bin or tokenizer.bin; pass one explicitly)");
            return new LoadedModel(weights, Llama2cTokenizer.Load(tok, weights.Config.VocabSize));
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    private static bool IsGguf(string path)
    {
        using var fs = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return fs.Read(magic) == 4 && BitConverter.ToUInt32(magic) == GgufFile.Magic;
    }

    private static string? FindLlama2cTokenizer(string checkpoint)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(checkpoint))!;
        var vocab = Llama2cLoader.ReadHeader(checkpoint).VocabSize;
        foreach (var name in new[] { $"tok{vocab}.bin", "tokenizer.bin" })
        {
            var p = Path.Combine(dir, name);
            if (File.Exists(p)) return p;
        }
        return null;
    }
}
