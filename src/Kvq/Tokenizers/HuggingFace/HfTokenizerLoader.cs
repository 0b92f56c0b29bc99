using System.Text.Json;
using System.Text.RegularExpressions;
using Kvq.Formats;
using Kvq.Formats.Safetensors;

namespace Kvq.Tokenizers.HuggingFace;

/// <summary>
/// Builds Kvq's tokenizers from a Hugging Face tokenizer.json (the tokenizers library's format) plus, when present,
/// tokenizer_config.json and config.json for the special tokens. Two families are understood, the two that
/// Llama-family repos use:
/// <list type="bullet">
/// <item>byte-level BPE (GPT-2, Llama 3, Qwen2): a ByteLevel pre-tokenizer, alone (GPT-2's regex) or after a Split
/// whose regex is recognised as Llama-3's or Qwen2's → <see cref="Gpt2BpeTokenizer"/> with that
/// <see cref="BpePreTokenizer"/>, built from the vocab and merges as-is;</item>
/// <item>SentencePiece-style BPE (Llama 1/2, Mistral): byte_fallback, '▁' for spaces (normalizer Replace + Prepend, or a
/// Metaspace pre-tokenizer) → <see cref="SentencePieceBpeTokenizer"/>, with piece scores derived from the merge
/// ranks (see <see cref="MergeRankScores"/>).</item>
/// </list>
/// Token types follow llama.cpp's converter (convert_hf_to_gguf.py), so the result tokenizes as llama.cpp does on
/// the GGUF converted from the same folder: added tokens that are special (or look special, "&lt;|...|&gt;") are
/// control tokens, other added tokens user-defined, "&lt;0xNN&gt;" pieces of SentencePiece vocabularies byte tokens,
/// ids that no piece names "[PADn]" unused tokens (up to config.json's vocab_size). Everything a tokenizer.json can
/// say that these classes would not honour is refused with a <see cref="ModelFormatException"/> naming the file and
/// the JSON path, rather than tokenizing differently without a word.
/// </summary>
/// <remarks>
/// Not applied, as in llama.cpp: normalizer NFC (Qwen2), added tokens' lstrip/rstrip/single_word, a template's
/// trailing EOS (add_eos_token), Metaspace's prepend_scheme "first" versus "always" after special tokens, and the
/// model's ignore_merges flag (the pre-tokenizer flavour decides, as llama.cpp's pre type does: Llama-3's regex
/// means ignore_merges).
/// </remarks>
public static partial class HfTokenizerLoader
{
    /// <summary>Token ids must stay below this (the vocabulary is an array indexed by id).</summary>
    public const int MaxTokenId = 1 << 24;

    /// <param name="tokenizerJsonPath">tokenizer.json.</param>
    /// <param name="tokenizerConfigPath">tokenizer_config.json (add_bos_token, bos_token, eos_token), if any.</param>
    /// <param name="config">what the model's config.json says of tokens: the vocabulary is padded to its vocab_size, and its
    /// bos_token_id / eos_token_id fill in what the tokenizer files leave open (every eos id ends generation).</param>
    /// <param name="configPath">where <paramref name="config"/> came from, for error messages.</param>
    /// <exception cref="ModelFormatException">a file is missing, malformed or describes an unsupported tokenizer.</exception>
    public static ITokenizer Load(string tokenizerJsonPath, string? tokenizerConfigPath = null, HfModelTokens? config = null,
        string? configPath = null)
    {
        using var json = HfJsonFile.Read(tokenizerJsonPath);
        using var tokenizerConfig = tokenizerConfigPath == null ? null : HfJsonFile.Read(tokenizerConfigPath);
        var root = json.Root;
        var model = root.Required("model", "the tokenization model (an object)");
        var typeNode = model.Property("type");
        string type = typeNode.IsMissing ? throw typeNode.Expected("'BPE'") : typeNode.String();
        if (type != "BPE")
            throw typeNode.Error($"expected 'BPE' (byte-level or SentencePiece-style BPE), found '{type}' (not supported)");
        foreach (string key in (string[])["continuing_subword_prefix", "end_of_word_suffix"])
            if (model.Optional(key) is { } affix && affix.String().Length != 0)
                throw affix.Error($"expected null or \"\" (no subword affixes), found '{HfNode.Show(affix.String())}'");
        if (model.Optional("dropout") is { } dropout && !(dropout.Kind == JsonValueKind.Number && dropout.Value.GetDouble() == 0))
            throw dropout.Expected("null (BPE dropout is for training)");
        var byteFallbackNode = model.Optional("byte_fallback");
        bool byteFallback = byteFallbackNode?.Bool() ?? false;

        var vocab = ReadVocab(model.Required("vocab", "an object of piece -> id"));
        var added = ReadAddedTokens(root.Optional("added_tokens"), vocab);
        int modelVocab = config?.VocabSize ?? 0;
        int count = Math.Max(modelVocab, Math.Max(vocab.MaxId, added.Count == 0 ? -1 : added.Max(a => a.Id)) + 1);
        if (count > modelVocab && modelVocab > 0)
        {
            var (node, id) = vocab.MaxId >= modelVocab ? (vocab.MaxNode, vocab.MaxId) : added.Where(a => a.Id >= modelVocab).Select(a => (a.Node, a.Id)).First();
            throw node.Error($"expected token ids below vocab_size {modelVocab} ({Path.GetFileName(configPath ?? "config.json")}), found id {id}");
        }
        var merges = ReadMerges(model.Required("merges", "an array of merges"), vocab.Ids);

        var pieces = new string[count];
        var types = new TokenType[count];
        for (int i = 0; i < count; i++)
        {
            pieces[i] = $"[PAD{i}]"; // as llama.cpp's converter fills ids that no piece names
            types[i] = TokenType.Unused;
        }
        foreach (var (piece, id) in vocab.Ids)
        {
            pieces[id] = piece;
            types[id] = TokenType.Normal;
        }
        foreach (var a in added)
        {
            pieces[a.Id] = a.Content;
            types[a.Id] = a.Special || LooksSpecial(a.Content) ? TokenType.Control : TokenType.UserDefined;
        }

        var pre = root.Optional("pre_tokenizer");
        if (HfPipeline.IsByteLevel(pre))
        {
            if (byteFallback)
                throw byteFallbackNode!.Error("expected false with a ByteLevel pre-tokenizer (byte-level BPE spells every byte), found true");
            var flavour = HfPipeline.ByteLevelFlavour(pre!);
            HfPipeline.CheckByteLevelNormalizer(root.Optional("normalizer"));
            HfPipeline.CheckByteLevelDecoder(root.Optional("decoder"));
            for (int i = 0; i < merges.Count; i++)
                if (merges[i].Left.Contains(' ') || merges[i].Right.Contains(' '))
                    throw merges[i].Node().Error("expected byte-level pieces, which write a space as 'Ġ', found a piece with a space");
            var tokenVocab = Build(json, "model.vocab", () => new TokenVocabulary(pieces, new float[count], types));
            var unk = model.Optional("unk_token") is { } u ? Find(tokenVocab, u) : -1;
            var s = Specials(tokenVocab, root, tokenizerConfig?.Root, config, configPath, unk, sentencePiece: false);
            string[] mergeTexts = merges.Select(m => m.Left + " " + m.Right).ToArray();
            return Build(json, "model.merges", () => new Gpt2BpeTokenizer(tokenVocab, mergeTexts, flavour, s.Ids.Bos, s.Ids.Eos,
                s.AddBos, addSpacePrefix: false, s.EndOfGeneration));
        }
        else
        {
            bool spacePrefix = HfPipeline.SentencePieceSpacePrefix(root);
            HfPipeline.CheckSentencePieceDecoder(root.Optional("decoder"));
            foreach (var (piece, id) in vocab.Ids)
                if (ByteToken().IsMatch(piece)) types[id] = TokenType.Byte;
            var scores = MergeRankScores(merges, vocab.Ids, count);
            var tokenVocab = Build(json, "model.vocab", () => new TokenVocabulary(pieces, scores, types));
            int unk = -1;
            if (model.Optional("unk_token") is { } u)
            {
                unk = Find(tokenVocab, u);
                tokenVocab.SetType(unk, TokenType.Unknown); // as SentencePiece's own model marks it
            }
            var s = Specials(tokenVocab, root, tokenizerConfig?.Root, config, configPath, unk, sentencePiece: true);
            return new SentencePieceBpeTokenizer(tokenVocab, s.Ids.Bos, s.Ids.Eos, unk, s.AddBos, spacePrefix, s.EndOfGeneration);
        }
    }

    /// <summary>
    /// SentencePiece scores from BPE merge ranks: the piece made by merge rank i scores -i (the first merge that
    /// makes it, when several do); every other piece (single characters, bytes, special tokens) scores below all of
    /// them, -(number of merges).
    /// </summary>
    /// <remarks>
    /// Why this reproduces SentencePiece-BPE's merging order: SentencePiece's BPE encoder (and llama.cpp's, which
    /// <see cref="SentencePieceBpeTokenizer"/> follows) repeatedly joins the adjacent pair of symbols whose
    /// concatenation is the vocabulary piece with the highest score, leftmost first on ties. Its BPE trainer creates
    /// one piece per merge step and scores the piece of step i as -i (books-19m: '▁t' 0, 'he' -1, '▁a' -2, ...), so
    /// score order is training-merge order. tokenizer.json keeps that order as merge ranks: transformers' exporter
    /// (SentencePieceExtractor) walks the pieces by score and lists, for each, every split of it into two pieces of
    /// the vocabulary. So a piece's first rank sorts the pieces as their scores do, -rank restores a score order
    /// identical to the original one, and the piece SentencePiece would make from two adjacent symbols is exactly
    /// what HF's "apply the lowest-ranked listed merge" makes, because every way of spelling a piece as two pieces
    /// is listed right after its first rank. Single characters and bytes are never made from two symbols, so their
    /// score only has to stay below the merged pieces'. (For a vocabulary trained by HF's BPE with byte_fallback the
    /// list holds only the one merge that made each piece; the two rules then differ only where adjacent symbols
    /// spell a piece by another split, which BPE's own merge order rarely produces.) llama.cpp's tokenizer.json
    /// path gives every piece -1000 instead and so merges leftmost-first; the tests show that gives other ids.
    /// </remarks>
    internal static float[] MergeRankScores(IReadOnlyList<Merge> merges, Dictionary<string, int> vocab, int count)
    {
        var scores = new float[count];
        Array.Fill(scores, float.NaN);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            int id = vocab[merges[rank].Left + merges[rank].Right];
            if (float.IsNaN(scores[id])) scores[id] = -rank;
        }
        float lowest = -merges.Count;
        for (int i = 0; i < count; i++)
            if (float.IsNaN(scores[i])) scores[i] = lowest;
        return scores;
    }

    [GeneratedRegex("^<0x[0-9A-Fa-f]{2}>$")]
    private static partial Regex ByteToken();

    /// <summary>llama.cpp's converter (does_token_look_special): added tokens that are control tokens in all but name.</summary>
    private static bool LooksSpecial(string text) =>
        text is "<pad>" or "<mask>" or "<2mass>" or "[@BOS@]" ||
        text.StartsWith("<|", StringComparison.Ordinal) && text.EndsWith("|>", StringComparison.Ordinal) ||
        text.StartsWith("<\uFF5C", StringComparison.Ordinal) && text.EndsWith("\uFF5C>", StringComparison.Ordinal) ||
        text.StartsWith("<unused", StringComparison.Ordinal) && text.EndsWith('>');

    // ---- model.vocab, added_tokens, model.merges ----

    private sealed record VocabInfo(Dictionary<string, int> Ids, int MaxId, HfNode MaxNode);

    private static VocabInfo ReadVocab(HfNode vocab)
    {
        if (vocab.Kind != JsonValueKind.Object) throw vocab.Expected("an object of piece -> id");
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        var byId = new Dictionary<int, string>();
        int maxId = -1;
        HfNode? maxNode = null;
        foreach (var p in vocab.Value.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0 || id >= MaxTokenId)
                throw vocab.Entry(p.Name, p.Value).Expected($"a token id in 0..{MaxTokenId - 1}");
            if (p.Name.Length == 0) throw vocab.Entry(p.Name, p.Value).Error("expected a non-empty piece, found \"\"");
            if (!ids.TryAdd(p.Name, id))
                throw vocab.Entry(p.Name, p.Value).Error($"expected each piece once, found it twice (ids {ids[p.Name]} and {id})");
            if (!byId.TryAdd(id, p.Name))
                throw vocab.Entry(p.Name, p.Value).Error($"expected each id once, found id {id} for '{HfNode.Show(byId[id])}' too");
            if (id > maxId) (maxId, maxNode) = (id, vocab.Entry(p.Name, p.Value));
        }
        if (maxNode == null) throw vocab.Error("expected at least one piece, found an empty object");
        return new VocabInfo(ids, maxId, maxNode);
    }

    private sealed record AddedToken(int Id, string Content, bool Special, HfNode Node);

    private static List<AddedToken> ReadAddedTokens(HfNode? list, VocabInfo vocab)
    {
        var result = new List<AddedToken>();
        if (list == null) return result;
        var byId = new Dictionary<int, AddedToken>();
        var byContent = new Dictionary<string, AddedToken>(StringComparer.Ordinal);
        var pieceOf = vocab.Ids.ToDictionary(kv => kv.Value, kv => kv.Key);
        foreach (var item in list.Items())
        {
            var idNode = item.Required("id", "a token id");
            int id = idNode.Int();
            if (id < 0 || id >= MaxTokenId) throw idNode.Expected($"a token id in 0..{MaxTokenId - 1}");
            var contentNode = item.Required("content", "the token's text");
            string content = contentNode.String();
            if (content.Length == 0) throw contentNode.Error("expected the token's text, found \"\"");
            bool special = item.Optional("special")?.Bool() ?? false;
            if (pieceOf.TryGetValue(id, out string? piece) && piece != content)
                throw contentNode.Error($"expected '{HfNode.Show(piece)}' (model.vocab's piece of id {id}), found '{HfNode.Show(content)}'");
            if (vocab.Ids.TryGetValue(content, out int other) && other != id)
                throw idNode.Error($"expected {other} (model.vocab's id of '{HfNode.Show(content)}'), found {id}");
            var token = new AddedToken(id, content, special, item);
            if (!byId.TryAdd(id, token))
                throw idNode.Error($"expected each id once, found id {id} for '{HfNode.Show(byId[id].Content)}' too");
            if (!byContent.TryAdd(content, token))
                throw contentNode.Error($"expected each token once, found '{HfNode.Show(content)}' with ids {byContent[content].Id} and {id}");
            result.Add(token);
        }
        return result;
    }

    /// <summary>One merge of model.merges (its node is made on demand, for errors).</summary>
    internal readonly record struct Merge(string Left, string Right, HfNode List, int Index, JsonElement Element)
    {
        public HfNode Node() => List.Item(Index, Element);
    }

    /// <summary>Both forms: "left right" (one space) and, since tokenizers 0.20, [left, right].</summary>
    private static List<Merge> ReadMerges(HfNode list, Dictionary<string, int> vocab)
    {
        if (list.Kind != JsonValueKind.Array) throw list.Expected("an array of merges");
        var merges = new List<Merge>(list.Value.GetArrayLength());
        int i = 0;
        foreach (var e in list.Value.EnumerateArray())
        {
            string left, right;
            if (e.ValueKind == JsonValueKind.String)
            {
                string s = e.GetString()!;
                int space = s.IndexOf(' ');
                if (space <= 0 || space == s.Length - 1 || s.IndexOf(' ', space + 1) >= 0)
                    throw list.Item(i, e).Error($"expected two pieces separated by one space, found '{HfNode.Show(s)}'");
                (left, right) = (s[..space], s[(space + 1)..]);
            }
            else if (e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 2 &&
                     e[0].ValueKind == JsonValueKind.String && e[1].ValueKind == JsonValueKind.String)
            {
                (left, right) = (e[0].GetString()!, e[1].GetString()!);
            }
            else throw list.Item(i, e).Expected("a merge: \"left right\" or [\"left\", \"right\"]");

            foreach (string part in (string[])[left, right])
                if (!vocab.ContainsKey(part))
                    throw list.Item(i, e).Error($"expected pieces of model.vocab, found '{HfNode.Show(part)}', which is not one");
            if (!vocab.ContainsKey(left + right))
                throw list.Item(i, e).Error($"expected the merged piece '{HfNode.Show(left + right)}' in model.vocab, found it missing");
            merges.Add(new Merge(left, right, list, i, e));
            i++;
        }
        return merges;
    }

    // ---- special tokens ----

    private sealed record SpecialTokens(SpecialTokenIds Ids, bool AddBos, List<int> EndOfGeneration);

    /// <summary>
    /// BOS: tokenizer_config.json's bos_token, else the special token the post_processor template puts first, else
    /// config.json's bos_token_id, else (SentencePiece) the piece "&lt;s&gt;". EOS likewise from eos_token,
    /// eos_token_id, "&lt;/s&gt;". add_bos_token: tokenizer_config.json's, else whether the template starts with a
    /// special token. End of generation: EOS, every config.json eos id, and llama.cpp's detection by text.
    /// </summary>
    private static SpecialTokens Specials(TokenVocabulary vocab, HfNode root, HfNode? tokenizerConfig, HfModelTokens? config,
        string? configPath, int unk, bool sentencePiece)
    {
        string configFile = configPath ?? HfFolder.ConfigFileName;
        int ConfigId(int id, string key) => (uint)id < (uint)vocab.Count ? id
            : throw new ModelFormatException(configFile, $"'{key}'", 0, $"expected a token id below {vocab.Count} (the tokenizer's vocabulary), found {id}");

        HfNode? ConfigToken(string key) => tokenizerConfig?.Optional(key);
        var templateBos = TemplateBos(root.Optional("post_processor"));

        int bos = ConfigToken("bos_token") is { } b ? Find(vocab, TokenText(b))
            : templateBos != null ? Find(vocab, templateBos)
            : config?.BosTokenId is int cb ? ConfigId(cb, "bos_token_id")
            : sentencePiece ? vocab.Find("<s>") : -1;
        int eos = ConfigToken("eos_token") is { } e ? Find(vocab, TokenText(e))
            : config?.EosTokenIds is [int ce, ..] ? ConfigId(ce, "eos_token_id")
            : sentencePiece ? vocab.Find("</s>") : -1;
        var addBosNode = ConfigToken("add_bos_token");
        bool addBos = addBosNode?.Bool() ?? templateBos != null;
        if (addBos && bos < 0)
            throw (addBosNode ?? root.Property("post_processor")).Error("expected a BOS token to add, found none in tokenizer_config.json, the template or config.json");

        var ids = new SpecialTokenIds { Bos = bos, Eos = eos, Unk = unk };
        var eog = new SortedSet<int>(ids.EndOfGeneration(vocab));
        foreach (int id in config?.EosTokenIds ?? []) eog.Add(ConfigId(id, "eos_token_id"));
        return new SpecialTokens(ids, addBos, [.. eog]);
    }

    /// <summary>tokenizer_config.json writes a token as its text or as an AddedToken object {"content": ...}.</summary>
    private static HfNode TokenText(HfNode token) => token.Kind switch
    {
        JsonValueKind.String => token,
        JsonValueKind.Object => token.Required("content", "the token's text"),
        _ => throw token.Expected("a token's text or {\"content\": ...}"),
    };

    /// <summary>The text node of the SpecialToken a TemplateProcessing (possibly inside a Sequence) puts before the
    /// single sequence, or null.</summary>
    private static HfNode? TemplateBos(HfNode? post)
    {
        if (post == null) return null;
        if (post.TypeName == "Sequence")
        {
            foreach (var p in post.Required("processors", "an array of post-processors").Items())
                if (TemplateBos(p) is { } hit) return hit;
            return null;
        }
        if (post.TypeName != "TemplateProcessing") return null;
        var single = post.Required("single", "an array of template pieces").Items();
        return single.Count == 0 ? null : single[0].Optional("SpecialToken")?.Required("id", "the token's text");
    }

    private static int Find(TokenVocabulary vocab, HfNode text)
    {
        int id = vocab.Find(text.String());
        return id >= 0 ? id : throw text.Error($"expected a token of the vocabulary, found '{HfNode.Show(text.String())}', which is not one");
    }

    private static T Build<T>(HfJsonFile file, string jsonPath, Func<T> build)
    {
        try { return build(); }
        catch (ArgumentException e) { throw file.Error(jsonPath, e.Message, e); }
    }
}
