using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Kvq.Formats.Gguf;

namespace Kvq.Tests.Tokenizers.HuggingFace;

/// <summary>
/// Writes tokenizer.json / tokenizer_config.json files the way Hugging Face repos have them, from the vocabularies
/// the other tokenizer tests use: a SentencePiece GGUF (books-19m, stories260K) exported as transformers exports a
/// SentencePiece model, and the GPT-2-style test vocabulary (<see cref="Gpt2TestModel"/>) with the pre-tokenizers of
/// GPT-2, Llama 3 and Qwen2.
/// </summary>
internal static class HfTokenizerJson
{
    public const string Llama3Regex =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string Qwen2Regex =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private static readonly JsonSerializerOptions Options = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static void Write(string path, JsonNode node) => File.WriteAllText(path, node.ToJsonString(Options));

    /// <summary>
    /// A SentencePiece-BPE GGUF vocabulary as transformers' LlamaConverter writes it: model.vocab with every piece,
    /// merges from SentencePieceExtractor (for each normal piece in score order, every split of it into two pieces of
    /// the vocabulary), &lt;unk&gt; &lt;s&gt; &lt;/s&gt; as special added tokens, the legacy normalizer (Prepend +
    /// Replace) or, with <paramref name="metaspace"/>, the newer Metaspace pre-tokenizer, and a template adding BOS.
    /// </summary>
    public static JsonObject SentencePieceFromGguf(string ggufPath, bool metaspace = false, bool arrayMerges = false)
    {
        using var g = GgufFile.Open(ggufPath);
        string[] pieces = g.TryGet<string[]>("tokenizer.ggml.tokens")!;
        float[] scores = g.TryGet<float[]>("tokenizer.ggml.scores")!;
        int[] types = g.TryGet<int[]>("tokenizer.ggml.token_type")!;
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        var vocab = new JsonObject();
        for (int i = 0; i < pieces.Length; i++)
        {
            ids[pieces[i]] = i;
            vocab[pieces[i]] = i;
        }
        var merges = new JsonArray();
        foreach (int id in Enumerable.Range(0, pieces.Length).Where(i => types[i] == 1).OrderByDescending(i => scores[i]).ThenBy(i => i))
        {
            string p = pieces[id];
            var local = new List<(int Left, int Right)>();
            for (int k = 1; k < p.Length; k++)
            {
                if (char.IsLowSurrogate(p[k])) continue;
                if (ids.TryGetValue(p[..k], out int l) && ids.TryGetValue(p[k..], out int r)) local.Add((l, r));
            }
            foreach (var (l, r) in local.OrderBy(x => x.Left).ThenBy(x => x.Right))
                merges.Add(arrayMerges ? new JsonArray(pieces[l], pieces[r]) : (JsonNode)$"{pieces[l]} {pieces[r]}");
        }

        var added = new JsonArray();
        for (int i = 0; i < pieces.Length; i++)
            if (types[i] is 2 or 3) added.Add(AddedToken(i, pieces[i], special: true));

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = metaspace ? null : new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "\u2581" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "\u2581" }),
            },
            ["pre_tokenizer"] = metaspace
                ? new JsonObject { ["type"] = "Metaspace", ["replacement"] = "\u2581", ["prepend_scheme"] = "first", ["split"] = false }
                : null,
            ["post_processor"] = Template(pieces[1], 1),
            ["decoder"] = metaspace
                ? new JsonObject { ["type"] = "Metaspace", ["replacement"] = "\u2581", ["prepend_scheme"] = "first", ["split"] = false }
                : new JsonObject
                {
                    ["type"] = "Sequence",
                    ["decoders"] = new JsonArray(
                        new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "\u2581" }, ["content"] = " " },
                        new JsonObject { ["type"] = "ByteFallback" },
                        new JsonObject { ["type"] = "Fuse" },
                        new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
                },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = pieces[0],
                ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null,
                ["fuse_unk"] = true,
                ["byte_fallback"] = true,
                ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = merges,
            },
        };
        return root;
    }

    /// <summary>tokenizer_config.json of a Llama-2-style repo.</summary>
    public static JsonObject SentencePieceConfig() => new()
    {
        ["add_bos_token"] = true,
        ["add_eos_token"] = false,
        ["bos_token"] = new JsonObject { ["__type"] = "AddedToken", ["content"] = "<s>", ["special"] = true },
        ["eos_token"] = "</s>",
        ["unk_token"] = "<unk>",
        ["legacy"] = false,
        ["tokenizer_class"] = "LlamaTokenizer",
        ["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    };

    /// <summary>
    /// The GPT-2-style test vocabulary as a byte-level tokenizer.json for a llama.cpp pre type ("gpt-2",
    /// "llama-bpe", "qwen2"): GPT-2's pieces and "&lt;|endoftext|&gt;" in model.vocab (as GPT-2 has it), the other
    /// special tokens and the user-defined "[USER]" as added tokens only, and the pre-tokenizer, normalizer and
    /// post-processor those repos use.
    /// </summary>
    public static JsonObject ByteLevel(string pre, bool arrayMerges)
    {
        var pieces = Gpt2TestModel.Pieces;
        var vocab = new JsonObject();
        for (int i = 0; i < pieces.Length; i++)
            if (i <= Gpt2TestModel.EndOfText || i == Gpt2TestModel.Unmergeable) vocab[pieces[i]] = i;
        var merges = new JsonArray();
        foreach (string m in Gpt2TestModel.Merges)
        {
            var parts = m.Split(' ');
            merges.Add(arrayMerges ? new JsonArray(parts[0], parts[1]) : (JsonNode)m);
        }
        var added = new JsonArray(
            AddedToken(Gpt2TestModel.EndOfText, "<|endoftext|>", special: true),
            AddedToken(Gpt2TestModel.ImStart, "<|im_start|>", special: true),
            AddedToken(Gpt2TestModel.ImEnd, "<|im_end|>", special: true),
            AddedToken(Gpt2TestModel.User, "[USER]", special: false));

        JsonObject ByteLevelStep(bool useRegex) => new()
        { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = useRegex };
        JsonObject Split(string regex) => new()
        {
            ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = "Isolated", ["invert"] = false,
        };
        JsonNode preTokenizer = pre switch
        {
            "gpt-2" => ByteLevelStep(useRegex: true),
            "llama-bpe" => new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(Split(Llama3Regex), ByteLevelStep(false)) },
            "qwen2" => new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(Split(Qwen2Regex), ByteLevelStep(false)) },
            _ => throw new ArgumentException(pre),
        };
        JsonNode post = pre == "llama-bpe"
            ? new JsonObject { ["type"] = "Sequence", ["processors"] = new JsonArray(ByteLevelStep(false), Template("<|endoftext|>", Gpt2TestModel.EndOfText)) }
            : ByteLevelStep(false);
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = pre == "qwen2" ? new JsonObject { ["type"] = "NFC" } : null,
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = post,
            ["decoder"] = ByteLevelStep(true),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE",
                ["dropout"] = null,
                ["unk_token"] = null,
                ["continuing_subword_prefix"] = pre == "qwen2" ? "" : null,
                ["end_of_word_suffix"] = pre == "qwen2" ? "" : null,
                ["fuse_unk"] = false,
                ["byte_fallback"] = false,
                ["ignore_merges"] = pre == "llama-bpe",
                ["vocab"] = vocab,
                ["merges"] = merges,
            },
        };
    }

    /// <summary>tokenizer_config.json for <see cref="ByteLevel"/>, matching the test GGUF's bos = eos = &lt;|endoftext|&gt;
    /// (llama-bpe: only eos_token, as an AddedToken object; BOS and add_bos come from the template).</summary>
    public static JsonObject ByteLevelConfig(string pre) => pre == "llama-bpe"
        ? new JsonObject { ["eos_token"] = new JsonObject { ["content"] = "<|endoftext|>", ["special"] = true } }
        : new JsonObject { ["add_bos_token"] = false, ["bos_token"] = "<|endoftext|>", ["eos_token"] = "<|endoftext|>" };

    public static JsonObject AddedToken(int id, string content, bool special) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
        ["normalized"] = !special, ["special"] = special,
    };

    private static JsonObject Template(string bos, int bosId) => new()
    {
        ["type"] = "TemplateProcessing",
        ["single"] = new JsonArray(
            new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = bos, ["type_id"] = 0 } },
            new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
        ["pair"] = new JsonArray(
            new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = bos, ["type_id"] = 0 } },
            new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
            new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = bos, ["type_id"] = 1 } },
            new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } }),
        ["special_tokens"] = new JsonObject
        {
            [bos] = new JsonObject { ["id"] = bos, ["ids"] = new JsonArray(bosId), ["tokens"] = new JsonArray(bos) },
        },
    };
}
