using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Kvq.Formats.Gguf;
using Kvq.Tokenizers;
using Kvq.Tokenizers.HuggingFace;

namespace Kvq.Tests.Tokenizers.HuggingFace;

/// <summary>The tokenizer.json files of the HF tokenizer tests, written once per test run into a temporary folder,
/// and the tokenizers loaded from them next to the GGUF ones they must agree with.</summary>
internal static class HfTestFiles
{
    private static readonly string Dir = Path.Combine(Path.GetTempPath(), $"kvq-hftok-test-{Environment.ProcessId}");
    private static readonly ConcurrentDictionary<string, Lazy<ITokenizer>> Cache = new();

    static HfTestFiles()
    {
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(Dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
    }

    /// <summary>Writes tokenizer.json (and tokenizer_config.json when given) into a fresh folder named <paramref name="name"/>.</summary>
    public static (string Json, string? Config) Write(string name, JsonObject tokenizer, JsonObject? config)
    {
        string dir = Path.Combine(Dir, name);
        Directory.CreateDirectory(dir);
        string json = Path.Combine(dir, "tokenizer.json");
        HfTokenizerJson.Write(json, tokenizer);
        string? cfg = null;
        if (config != null)
        {
            cfg = Path.Combine(dir, "tokenizer_config.json");
            HfTokenizerJson.Write(cfg, config);
        }
        return (json, cfg);
    }

    private static T Get<T>(string key, Func<ITokenizer> load) where T : ITokenizer =>
        Assert.IsType<T>(Cache.GetOrAdd(key, _ => new Lazy<ITokenizer>(load)).Value);

    /// <summary>A SentencePiece GGUF's vocabulary exported to tokenizer.json and loaded back.</summary>
    public static SentencePieceBpeTokenizer SentencePiece(string gguf, bool metaspace, bool withConfig) =>
        Get<SentencePieceBpeTokenizer>($"spm|{gguf}|{metaspace}|{withConfig}", () =>
        {
            var (json, cfg) = Write($"spm-{Path.GetFileNameWithoutExtension(gguf)}-{metaspace}-{withConfig}",
                HfTokenizerJson.SentencePieceFromGguf(Fixtures.Model(gguf), metaspace, arrayMerges: metaspace),
                withConfig ? HfTokenizerJson.SentencePieceConfig() : null);
            return HfTokenizerLoader.Load(json, cfg);
        });

    /// <summary>The GPT-2-style test vocabulary as a byte-level tokenizer.json for a llama.cpp pre type.</summary>
    public static Gpt2BpeTokenizer ByteLevel(string pre) =>
        Get<Gpt2BpeTokenizer>($"bpe|{pre}", () =>
        {
            var (json, cfg) = Write($"bpe-{pre}", HfTokenizerJson.ByteLevel(pre, arrayMerges: pre != "gpt-2"), HfTokenizerJson.ByteLevelConfig(pre));
            return HfTokenizerLoader.Load(json, cfg);
        });

    /// <summary>The GGUF-built tokenizer a byte-level variant must equal (llama-bpe: add_bos left to the pre type's default).</summary>
    public static Gpt2BpeTokenizer ByteLevelGguf(string pre) => Gpt2BpeTokenizerTests.Tokenizer(pre, pre == "llama-bpe" ? null : false);

    public static SentencePieceBpeTokenizer SentencePieceGguf(string gguf) =>
        Get<SentencePieceBpeTokenizer>($"gguf|{gguf}", () =>
        {
            using var g = GgufFile.Open(Fixtures.Model(gguf));
            return TokenizerFactory.FromGguf(g);
        });
}
