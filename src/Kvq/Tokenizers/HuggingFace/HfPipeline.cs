namespace Kvq.Tokenizers.HuggingFace;

/// <summary>
/// Recognises the normalizer / pre_tokenizer / decoder of a tokenizer.json as one of the two pipelines Llama-family
/// models use, and fails on anything else (a component Kvq would silently not apply).
/// </summary>
internal static class HfPipeline
{
    /// <summary>
    /// Split regexes by pre-tokenizer flavour: as HF repos write them (GPT-2's is the one HF's ByteLevel applies
    /// itself; Llama-3's and Qwen2's group the contractions with (?i:...)), and as llama.cpp spells them.
    /// </summary>
    private static readonly (string Pattern, BpePreTokenizer Kind)[] KnownRegexes =
    [
        (BpeWordSplitter.Gpt2, BpePreTokenizer.Gpt2),
        (@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", BpePreTokenizer.Llama3),
        (BpeWordSplitter.Llama3, BpePreTokenizer.Llama3),
        (@"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", BpePreTokenizer.Qwen2),
        (BpeWordSplitter.Qwen2, BpePreTokenizer.Qwen2),
    ];

    private const string Metaspace = "\u2581";

    /// <summary>Whether the pre-tokenizer is byte-level: ByteLevel itself, or a Sequence with a ByteLevel step.</summary>
    public static bool IsByteLevel(HfNode? pre) =>
        pre != null && (pre.TypeName == "ByteLevel" ||
                        pre.TypeName == "Sequence" && pre.Property("pretokenizers") is { Kind: System.Text.Json.JsonValueKind.Array } steps &&
                        steps.Items().Any(s => s.TypeName == "ByteLevel"));

    /// <summary>
    /// The word splitting of a byte-level pre-tokenizer: ByteLevel with use_regex (GPT-2's regex), or a Sequence of
    /// one Split (Isolated, not inverted) with a recognised regex followed by ByteLevel without use_regex.
    /// </summary>
    public static BpePreTokenizer ByteLevelFlavour(HfNode pre)
    {
        var steps = pre.TypeName == "Sequence" ? pre.Required("pretokenizers", "an array of pre-tokenizers").Items() : [pre];
        var last = steps.Count > 0 ? steps[^1] : throw pre.Property("pretokenizers").Expected("a non-empty array of pre-tokenizers");
        if (last.TypeName != "ByteLevel")
            throw last.Error($"expected the ByteLevel step last (after any Split), found type '{last.TypeName ?? last.Describe()}'");
        if (last.Optional("add_prefix_space") is { } aps && aps.Bool())
            throw aps.Error("expected false (a space prefix on byte-level BPE is not supported), found true");
        var useRegexNode = last.Optional("use_regex");
        bool useRegex = useRegexNode?.Bool() ?? true; // HF's default
        if (steps.Count == 1)
        {
            if (!useRegex)
                throw useRegexNode!.Error("expected true when no Split step comes before ByteLevel (nothing would cut the text into words), found false");
            return BpePreTokenizer.Gpt2;
        }
        if (useRegex)
            throw (useRegexNode ?? last).Error("expected use_regex false after a Split step (GPT-2's regex on top of the Split's is not supported), found true");
        if (steps.Count != 2)
            throw steps[1].Error($"expected one Split step before ByteLevel, found {steps.Count - 1} steps");
        return SplitFlavour(steps[0]);
    }

    private static BpePreTokenizer SplitFlavour(HfNode split)
    {
        if (split.TypeName != "Split")
            throw split.Error($"expected a Split step with the GPT-2, Llama-3 or Qwen2 regex, found type '{split.TypeName ?? split.Describe()}'");
        var pattern = split.Required("pattern", "an object with a Regex");
        var regex = pattern.Property("Regex");
        if (regex.IsMissing)
            throw pattern.Error($"expected {{\"Regex\": ...}} (the GPT-2, Llama-3 or Qwen2 pre-tokenizer regex), found {pattern.Value.GetRawText()}");
        string text = regex.String();
        var hit = KnownRegexes.FirstOrDefault(k => k.Pattern == text);
        if (hit.Pattern == null)
            throw regex.Error($"expected the GPT-2, Llama-3 or Qwen2 pre-tokenizer regex, found '{HfNode.Show(text)}' (not recognised)");
        string behavior = split.Optional("behavior")?.String() ?? "";
        if (behavior != "Isolated")
            throw split.Property("behavior").Error($"expected 'Isolated' (matches and the text between them become words), found '{behavior}'");
        if (split.Optional("invert") is { } invert && invert.Bool())
            throw invert.Error("expected false, found true");
        return hit.Kind;
    }

    /// <summary>Byte-level BPE normalizer: none, or NFC (Qwen2). NFC is not applied: llama.cpp, which converts these
    /// files to GGUF and is Kvq's reference, drops normalizers too; text that is already NFC is unaffected.</summary>
    public static void CheckByteLevelNormalizer(HfNode? normalizer)
    {
        if (normalizer == null) return;
        var steps = normalizer.TypeName == "Sequence" ? normalizer.Required("normalizers", "an array of normalizers").Items() : [normalizer];
        foreach (var step in steps)
            if (step.TypeName != "NFC")
                throw step.Error($"expected no normalizer or NFC for byte-level BPE, found type '{step.TypeName ?? step.Describe()}'");
    }

    public static void CheckByteLevelDecoder(HfNode? decoder)
    {
        if (decoder == null || decoder.TypeName == "ByteLevel") return;
        throw decoder.Error($"expected the ByteLevel decoder for byte-level BPE, found type '{decoder.TypeName ?? decoder.Describe()}'");
    }

    /// <summary>
    /// SentencePiece-style text preparation: spaces become '▁' (normalizer Replace ' ' -> '▁', or a Metaspace
    /// pre-tokenizer), with a '▁' in front (normalizer Prepend '▁', or Metaspace's prepend_scheme / add_prefix_space).
    /// Returns whether the space prefix is added.
    /// </summary>
    /// <remarks>Metaspace's prepend_scheme "first" (prefix only at the very start, not after a special token) is
    /// read as "always", as llama.cpp does; the two differ only after special tokens parsed out of the text.</remarks>
    public static bool SentencePieceSpacePrefix(HfNode root)
    {
        HfNode? normalizer = root.Optional("normalizer"), pre = root.Optional("pre_tokenizer");
        bool escaped = false, prefix = false;
        if (normalizer != null)
        {
            var steps = normalizer.TypeName == "Sequence" ? normalizer.Required("normalizers", "an array of normalizers").Items() : [normalizer];
            foreach (var step in steps)
            {
                switch (step.TypeName)
                {
                    case "Prepend":
                        var p = step.Required("prepend", "a string");
                        if (p.String() != Metaspace) throw p.Error($"expected '{Metaspace}', found '{HfNode.Show(p.String())}'");
                        prefix = true;
                        break;
                    case "Replace":
                        var pattern = step.Required("pattern", "an object with a String");
                        var from = pattern.Property("String");
                        if (from.IsMissing || from.String() != " ")
                            throw pattern.Error($"expected {{\"String\": \" \"}} (spaces to '{Metaspace}'), found {pattern.Value.GetRawText()}");
                        var to = step.Required("content", "a string");
                        if (to.String() != Metaspace) throw to.Error($"expected '{Metaspace}', found '{HfNode.Show(to.String())}'");
                        escaped = true;
                        break;
                    default:
                        throw step.Error($"expected Prepend '{Metaspace}' or Replace ' ' -> '{Metaspace}' (SentencePiece-style BPE), found type '{step.TypeName ?? step.Describe()}'");
                }
            }
        }
        if (pre != null)
        {
            if (pre.TypeName != "Metaspace")
                throw pre.Error($"expected no pre-tokenizer, Metaspace (SentencePiece-style BPE) or ByteLevel (byte-level BPE), found type '{pre.TypeName ?? pre.Describe()}'");
            if (pre.Optional("replacement") is { } r && r.String() != Metaspace)
                throw r.Error($"expected '{Metaspace}', found '{HfNode.Show(r.String())}'");
            // Older files have no "split" and then split at every '▁', which SentencePiece's merging does not do.
            var split = pre.Property("split");
            if (split.IsMissing || split.Bool())
                throw split.Error($"expected false (splitting into words at every '{Metaspace}' is not SentencePiece's merging), found {split.Describe()}");
            if (pre.Optional("prepend_scheme") is { } scheme)
            {
                prefix |= scheme.String() switch
                {
                    "always" or "first" => true,
                    "never" => false,
                    var s => throw scheme.Error($"expected 'always', 'first' or 'never', found '{s}'"),
                };
            }
            else prefix |= pre.Optional("add_prefix_space")?.Bool() ?? true;
            escaped = true;
        }
        if (!escaped)
            throw (normalizer ?? root.Property("normalizer")).Error(
                $"expected spaces turned into '{Metaspace}' (Replace normalizer or Metaspace pre-tokenizer) for SentencePiece-style BPE, or a ByteLevel pre-tokenizer for byte-level BPE; found neither");
        return prefix;
    }

    private static readonly string[] SentencePieceDecoders = ["Replace", "ByteFallback", "Fuse", "Strip", "Metaspace"];

    public static void CheckSentencePieceDecoder(HfNode? decoder)
    {
        if (decoder == null) return;
        var steps = decoder.TypeName == "Sequence" ? decoder.Required("decoders", "an array of decoders").Items() : [decoder];
        foreach (var step in steps)
            if (!SentencePieceDecoders.Contains(step.TypeName))
                throw step.Error($"expected a SentencePiece-style decoder step ({string.Join(", ", SentencePieceDecoders)}), found type '{step.TypeName ?? step.Describe()}'");
    }
}
