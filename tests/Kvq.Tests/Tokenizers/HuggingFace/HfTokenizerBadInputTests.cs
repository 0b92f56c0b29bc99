using System.Text.Json.Nodes;
using Kvq.Formats;
using Kvq.Tokenizers;
using Kvq.Tokenizers.HuggingFace;

namespace Kvq.Tests.Tokenizers.HuggingFace;

/// <summary>Small hand-made tokenizer.json files: what they load as, and every kind of damage giving a
/// <see cref="ModelFormatException"/> that names the file and the JSON path.</summary>
public sealed class HfTokenizerBadInputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kvq-hftok-bad-").FullName;

    public void Dispose()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>SentencePiece-style: "▁a" (merge rank 0) outranks "ab" (rank 1).</summary>
    internal static JsonObject SmallSentencePiece() => new()
    {
        ["added_tokens"] = new JsonArray(
            HfTokenizerJson.AddedToken(0, "<unk>", true), HfTokenizerJson.AddedToken(1, "<s>", true), HfTokenizerJson.AddedToken(2, "</s>", true)),
        ["normalizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["normalizers"] = new JsonArray(
                new JsonObject { ["type"] = "Prepend", ["prepend"] = "\u2581" },
                new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "\u2581" }),
        },
        ["pre_tokenizer"] = null,
        ["post_processor"] = new JsonObject
        {
            ["type"] = "TemplateProcessing",
            ["single"] = new JsonArray(
                new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } },
                new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
        },
        ["decoder"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["decoders"] = new JsonArray(new JsonObject { ["type"] = "ByteFallback" }, new JsonObject { ["type"] = "Fuse" }),
        },
        ["model"] = new JsonObject
        {
            ["type"] = "BPE",
            ["dropout"] = null,
            ["unk_token"] = "<unk>",
            ["byte_fallback"] = true,
            ["vocab"] = new JsonObject
            {
                ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2, ["<0x41>"] = 3, ["\u2581"] = 4, ["a"] = 5, ["b"] = 6, ["\u2581a"] = 7, ["ab"] = 8,
            },
            ["merges"] = new JsonArray("\u2581 a", "a b"),
        },
    };

    /// <summary>Byte-level with Llama 3's pre-tokenizer.</summary>
    internal static JsonObject SmallByteLevel() => new()
    {
        ["added_tokens"] = new JsonArray(HfTokenizerJson.AddedToken(5, "<|endoftext|>", true), HfTokenizerJson.AddedToken(6, "<|im_start|>", false)),
        ["normalizer"] = null,
        ["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject
                {
                    ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = HfTokenizerJson.Llama3Regex },
                    ["behavior"] = "Isolated", ["invert"] = false,
                },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
        },
        ["post_processor"] = new JsonObject { ["type"] = "ByteLevel" },
        ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
        ["model"] = new JsonObject
        {
            ["type"] = "BPE",
            ["vocab"] = new JsonObject { ["a"] = 0, ["b"] = 1, ["ab"] = 2, ["\u0120"] = 3, ["\u0120a"] = 4, ["<|endoftext|>"] = 5 },
            ["merges"] = new JsonArray("a b", new JsonArray("\u0120", "a")),
        },
    };

    private string Write(string name, JsonNode node)
    {
        string path = Path.Combine(_dir, name);
        HfTokenizerJson.Write(path, node);
        return path;
    }

    [Fact]
    public void SmallSentencePiece_MergesByRank_WithTheTemplatesBos()
    {
        var tok = Assert.IsType<SentencePieceBpeTokenizer>(HfTokenizerLoader.Load(Write("tokenizer.json", SmallSentencePiece())));
        Assert.True(tok.AddBos);
        Assert.True(tok.AddSpacePrefix);
        Assert.Equal((1, 2, 0), (tok.BosId, tok.EosId, tok.UnknownId)); // "<s>" and "</s>" by name, unk from model.unk_token
        Assert.Equal([1, 7, 6, 7], tok.Encode("ab a", tok.AddBos));    // '▁a' 'b' '▁a': rank 0 before rank 1
        Assert.Equal((0f, -1f, -2f), (tok.Score(7), tok.Score(8), tok.Score(5)));
        Assert.Equal(TokenType.Byte, tok.Type(3));
        Assert.Equal(TokenType.Unknown, tok.Type(0));
        Assert.Equal(TokenType.Control, tok.Type(1));
        Assert.Equal([1, 4, 3], tok.Encode("A", true));    // '▁' then byte fallback <0x41>
        Assert.Equal([1, 4, 0, 0], tok.Encode("é", true)); // no byte tokens for C3 A9: unknown
    }

    [Fact]
    public void SmallByteLevel_SplitsMergesAndTypesAddedTokens()
    {
        var tok = Assert.IsType<Gpt2BpeTokenizer>(HfTokenizerLoader.Load(Write("tokenizer.json", SmallByteLevel())));
        Assert.Equal(BpePreTokenizer.Llama3, tok.PreTokenizer);
        Assert.False(tok.AddBos);
        Assert.Equal((-1, -1), (tok.BosId, tok.EosId));
        Assert.Equal([2, 4], tok.Encode("ab a", false));
        Assert.Equal(TokenType.Control, tok.Type(5));
        Assert.Equal(TokenType.Control, tok.Type(6)); // not marked special, but looks it ("<|...|>"), as llama.cpp's converter decides
        Assert.True(tok.IsEndOfGeneration(5));        // "<|endoftext|>" by its text
        Assert.Equal([2, 5, 4], tok.Encode("ab<|endoftext|> a", false, parseSpecial: true));
    }

    public static TheoryData<string, string, string> Broken() => new()
    {
        // damage, file that must be named, item
        { "not json", "tokenizer.json", "tokenizer.json" },
        { "root is an array", "tokenizer.json", "tokenizer.json" },
        { "duplicate top-level key", "tokenizer.json", "key 'model'" },
        { "no model", "tokenizer.json", "JSON path 'model'" },
        { "model is a string", "tokenizer.json", "JSON path 'model'" },
        { "model type Unigram", "tokenizer.json", "JSON path 'model.type'" },
        { "model type missing", "tokenizer.json", "JSON path 'model.type'" },
        { "dropout", "tokenizer.json", "JSON path 'model.dropout'" },
        { "subword prefix", "tokenizer.json", "JSON path 'model.continuing_subword_prefix'" },
        { "vocab is an array", "tokenizer.json", "JSON path 'model.vocab'" },
        { "vocab empty", "tokenizer.json", "JSON path 'model.vocab'" },
        { "vocab id negative", "tokenizer.json", "JSON path 'model.vocab['a']'" },
        { "vocab id is text", "tokenizer.json", "JSON path 'model.vocab['a']'" },
        { "vocab id huge", "tokenizer.json", "JSON path 'model.vocab['a']'" },
        { "vocab id twice", "tokenizer.json", "JSON path 'model.vocab['b']'" },
        { "vocab piece lone surrogate", "tokenizer.json", "JSON string" },
        { "merge lone surrogate", "tokenizer.json", "JSON string" },
        { "invalid UTF-8", "tokenizer.json", "tokenizer.json" },
        { "merges missing", "tokenizer.json", "JSON path 'model.merges'" },
        { "merge without space", "tokenizer.json", "JSON path 'model.merges[1]'" },
        { "merge of one piece", "tokenizer.json", "JSON path 'model.merges[0]'" },
        { "merge of unknown piece", "tokenizer.json", "JSON path 'model.merges[1]'" },
        { "merged piece missing", "tokenizer.json", "JSON path 'model.merges[2]'" },
        { "added token renames a piece", "tokenizer.json", "JSON path 'added_tokens[1].content'" },
        { "added token id is text", "tokenizer.json", "JSON path 'added_tokens[0].id'" },
        { "added token takes a piece's text", "tokenizer.json", "JSON path 'added_tokens[3].id'" },
        { "unk token unknown", "tokenizer.json", "JSON path 'model.unk_token'" },
        { "spm normalizer NFKC", "tokenizer.json", "JSON path 'normalizer.normalizers[2]'" },
        { "spm no space escaping", "tokenizer.json", "JSON path 'normalizer'" },
        { "spm metaspace split", "tokenizer.json", "JSON path 'pre_tokenizer.split'" },
        { "spm metaspace legacy", "tokenizer.json", "JSON path 'pre_tokenizer.split'" },
        { "spm pre-tokenizer Whitespace", "tokenizer.json", "JSON path 'pre_tokenizer'" },
        { "spm decoder WordPiece", "tokenizer.json", "JSON path 'decoder'" },
        { "template bos unknown", "tokenizer.json", "JSON path 'post_processor.single[0].SpecialToken.id'" },
        { "bpe unknown regex", "tokenizer.json", "JSON path 'pre_tokenizer.pretokenizers[0].pattern.Regex'" },
        { "bpe split string pattern", "tokenizer.json", "JSON path 'pre_tokenizer.pretokenizers[0].pattern'" },
        { "bpe split behavior", "tokenizer.json", "JSON path 'pre_tokenizer.pretokenizers[0].behavior'" },
        { "bpe two splits", "tokenizer.json", "JSON path 'pre_tokenizer.pretokenizers[1]'" },
        { "bpe add_prefix_space", "tokenizer.json", "JSON path 'pre_tokenizer.pretokenizers[1].add_prefix_space'" },
        { "bpe use_regex after split", "tokenizer.json", "JSON path 'pre_tokenizer.pretokenizers[1].use_regex'" },
        { "bpe ByteLevel without regex", "tokenizer.json", "JSON path 'pre_tokenizer.use_regex'" },
        { "bpe byte_fallback", "tokenizer.json", "JSON path 'model.byte_fallback'" },
        { "bpe normalizer NFKC", "tokenizer.json", "JSON path 'normalizer'" },
        { "bpe decoder Metaspace", "tokenizer.json", "JSON path 'decoder'" },
        { "bpe piece with a space", "tokenizer.json", "JSON path 'model.merges[2]'" },
        { "config not json", "tokenizer_config.json", "tokenizer_config.json" },
        { "config bos unknown", "tokenizer_config.json", "JSON path 'bos_token'" },
        { "config bos object without content", "tokenizer_config.json", "JSON path 'bos_token.content'" },
        { "config add_bos not bool", "tokenizer_config.json", "JSON path 'add_bos_token'" },
        { "config add_bos without bos", "tokenizer_config.json", "JSON path 'add_bos_token'" },
    };

    [Theory]
    [MemberData(nameof(Broken))]
    public void Damage_ThrowsModelFormatException_NamingFileAndJsonPath(string damage, string file, string item)
    {
        bool bpe = damage.StartsWith("bpe ", StringComparison.Ordinal);
        var root = bpe ? SmallByteLevel() : SmallSentencePiece();
        var model = root["model"]!.AsObject();
        var vocab = model["vocab"]!.AsObject();
        var merges = model["merges"]!.AsArray();
        var pre = root["pre_tokenizer"];
        JsonObject? config = null;
        string? rawJson = null, rawConfig = null;
        switch (damage)
        {
            case "not json": rawJson = "{\"model\": {\"type\": \"BPE\","; break;
            case "root is an array": rawJson = "[1, 2]"; break;
            case "duplicate top-level key": rawJson = "{\"model\": {}, \"model\": {}}"; break;
            case "no model": root.Remove("model"); break;
            case "model is a string": root["model"] = "BPE"; break;
            case "model type Unigram": model["type"] = "Unigram"; break;
            case "model type missing": model.Remove("type"); break;
            case "dropout": model["dropout"] = 0.1; break;
            case "subword prefix": model["continuing_subword_prefix"] = "##"; break;
            case "vocab is an array": model["vocab"] = new JsonArray(); break;
            case "vocab empty": model["vocab"] = new JsonObject(); break;
            case "vocab id negative": vocab["a"] = -1; break;
            case "vocab id is text": vocab["a"] = "5"; break;
            case "vocab id huge": vocab["a"] = 1 << 24; break;
            case "vocab id twice": vocab["b"] = 5; break;
            case "vocab piece lone surrogate":
                rawJson = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"\\ud800\": 1}, \"merges\": []}}";
                break;
            case "invalid UTF-8":
                rawJson = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\u00FF\": 0}, \"merges\": []}}";
                break;
            case "merge lone surrogate":
                rawJson = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a \\udc00\"]}}";
                break;
            case "merges missing": model.Remove("merges"); break;
            case "merge without space": merges[1] = "ab"; break;
            case "merge of one piece": merges[0] = new JsonArray("a"); break;
            case "merge of unknown piece": merges[1] = "a z"; break;
            case "merged piece missing": merges.Add("b a"); break;
            case "added token renames a piece": root["added_tokens"]![1]!["content"] = "<S>"; break;
            case "added token id is text": root["added_tokens"]![0]!["id"] = "0"; break;
            case "added token takes a piece's text": root["added_tokens"]!.AsArray().Add(HfTokenizerJson.AddedToken(9, "ab", false)); break;
            case "unk token unknown": model["unk_token"] = "<UNK>"; break;
            case "spm normalizer NFKC": root["normalizer"]!["normalizers"]!.AsArray().Add(new JsonObject { ["type"] = "NFKC" }); break;
            case "spm no space escaping": root["normalizer"] = null; break;
            case "spm metaspace split":
            case "spm metaspace legacy":
                root["normalizer"] = null;
                root["pre_tokenizer"] = damage.EndsWith("split")
                    ? new JsonObject { ["type"] = "Metaspace", ["replacement"] = "\u2581", ["prepend_scheme"] = "always", ["split"] = true }
                    : new JsonObject { ["type"] = "Metaspace", ["replacement"] = "\u2581", ["add_prefix_space"] = true };
                break;
            case "spm pre-tokenizer Whitespace": root["pre_tokenizer"] = new JsonObject { ["type"] = "Whitespace" }; break;
            case "spm decoder WordPiece": root["decoder"] = new JsonObject { ["type"] = "WordPiece", ["prefix"] = "##" }; break;
            case "template bos unknown": root["post_processor"]!["single"]![0]!["SpecialToken"]!["id"] = "<bos>"; break;
            case "bpe unknown regex": pre!["pretokenizers"]![0]!["pattern"]!["Regex"] = @"\p{L}+|\p{N}+"; break;
            case "bpe split string pattern": pre!["pretokenizers"]![0]!["pattern"] = new JsonObject { ["String"] = " " }; break;
            case "bpe split behavior": pre!["pretokenizers"]![0]!["behavior"] = "Removed"; break;
            case "bpe two splits":
                pre!["pretokenizers"]!.AsArray().Insert(1, pre["pretokenizers"]![0]!.DeepClone());
                break;
            case "bpe add_prefix_space": pre!["pretokenizers"]![1]!["add_prefix_space"] = true; break;
            case "bpe use_regex after split": pre!["pretokenizers"]![1]!["use_regex"] = true; break;
            case "bpe ByteLevel without regex":
                root["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = false };
                break;
            case "bpe byte_fallback": model["byte_fallback"] = true; break;
            case "bpe normalizer NFKC": root["normalizer"] = new JsonObject { ["type"] = "NFKC" }; break;
            case "bpe decoder Metaspace": root["decoder"] = new JsonObject { ["type"] = "Metaspace" }; break;
            case "bpe piece with a space":
                vocab["a "] = 7;
                vocab["a a"] = 8;
                merges.Add(new JsonArray("a ", "a"));
                break;
            case "config not json": rawConfig = "{\"bos_token\": "; break;
            case "config bos unknown": config = new JsonObject { ["bos_token"] = "<bos>" }; break;
            case "config bos object without content": config = new JsonObject { ["bos_token"] = new JsonObject { ["special"] = true } }; break;
            case "config add_bos not bool": config = new JsonObject { ["add_bos_token"] = "yes" }; break;
            case "config add_bos without bos": config = new JsonObject { ["add_bos_token"] = true }; root = SmallByteLevel(); break;
            default: throw new ArgumentException(damage);
        }
        string jsonPath = Path.Combine(_dir, "tokenizer.json");
        if (rawJson != null) File.WriteAllBytes(jsonPath, damage == "invalid UTF-8" ? System.Text.Encoding.Latin1.GetBytes(rawJson) : System.Text.Encoding.UTF8.GetBytes(rawJson));
        else HfTokenizerJson.Write(jsonPath, root);
        string? configPath = null;
        if (rawConfig != null || config != null)
        {
            configPath = Path.Combine(_dir, "tokenizer_config.json");
            if (rawConfig != null) File.WriteAllText(configPath, rawConfig);
            else HfTokenizerJson.Write(configPath, config!);
        }

        var e = Assert.Throws<ModelFormatException>(() => HfTokenizerLoader.Load(jsonPath, configPath));
        Assert.Equal(Path.Combine(_dir, file), e.FilePath);
        Assert.Equal(item, e.Item);
        Assert.Contains("expected", e.Message);
        if (item.StartsWith("JSON path", StringComparison.Ordinal) && damage != "no model") Assert.True(e.Offset > 0, $"offset {e.Offset}");
    }

    /// <summary>Random damage to every value of the small files: a tokenizer or a ModelFormatException, nothing else.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RandomDamage_IsATokenizerOrATypedError(bool byteLevel)
    {
        var rng = new Random(byteLevel ? 11 : 12);
        Func<JsonNode?>[] replacements =
        [
            () => null, () => 0, () => -1, () => 1.5, () => 70000, () => "x", () => "", () => "a b", () => "\u2581", () => true,
            () => new JsonArray(), () => new JsonObject(), () => new JsonArray("a", "b"), () => new JsonObject { ["type"] = "Sequence" },
            () => new JsonObject { ["type"] = "ByteLevel" }, () => new JsonObject { ["type"] = "Metaspace", ["split"] = false },
        ];
        string path = Path.Combine(_dir, "tokenizer.json");
        int loaded = 0, refused = 0;
        for (int trial = 0; trial < 400; trial++)
        {
            var root = byteLevel ? SmallByteLevel() : SmallSentencePiece();
            var nodes = new List<(JsonNode Parent, object Key)>();
            void Collect(JsonNode node)
            {
                if (node is JsonObject o)
                    foreach (var (k, v) in o.ToList()) { nodes.Add((o, k)); if (v != null) Collect(v); }
                else if (node is JsonArray a)
                    for (int i = 0; i < a.Count; i++) { nodes.Add((a, i)); if (a[i] != null) Collect(a[i]!); }
            }
            Collect(root);
            for (int k = rng.Next(1, 3); k > 0; k--)
            {
                var (parent, key) = nodes[rng.Next(nodes.Count)];
                var value = replacements[rng.Next(replacements.Length)]();
                try
                {
                    if (parent is JsonObject o) o[(string)key] = value;
                    else ((JsonArray)parent)[(int)key] = value;
                }
                catch (InvalidOperationException) { } // node already detached by an earlier replacement
            }
            HfTokenizerJson.Write(path, root);
            try
            {
                var tok = HfTokenizerLoader.Load(path);
                tok.Encode("ab a<|endoftext|> \u00e9", tok.AddBos, parseSpecial: true);
                loaded++;
            }
            catch (ModelFormatException e)
            {
                Assert.Equal(path, e.FilePath);
                refused++;
            }
        }
        Assert.True(loaded > 0 && refused > 0, $"loaded {loaded}, refused {refused}");
    }
}
