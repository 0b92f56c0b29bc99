using Kvq.Formats;
using Kvq.Formats.Gguf;

namespace Kvq.Tokenizers;

/// <summary>Builds the tokenizer a GGUF file describes (tokenizer.ggml.* metadata), with llama.cpp's defaults.</summary>
public static class TokenizerFactory
{
    private const string Prefix = "tokenizer.ggml.";

    /// <exception cref="ModelFormatException">tokenizer metadata is missing, of the wrong type, or inconsistent (array
    /// lengths, duplicate pieces, token ids outside the vocabulary, malformed merges or byte tokens).</exception>
    public static ITokenizer FromGguf(GgufFile gguf)
    {
        string model = gguf.TryGetString(Prefix + "model") ?? throw Error(gguf, "model", "required key is missing");
        return model switch
        {
            "llama" => SentencePiece(gguf),
            "gpt2" => BytePairs(gguf),
            _ => throw Error(gguf, "model", $"unsupported tokenizer model '{model}' (supported: 'llama', 'gpt2')"),
        };
    }

    private static SentencePieceBpeTokenizer SentencePiece(GgufFile gguf)
    {
        var (pieces, scores, types) = ReadVocabulary(gguf, scoresRequired: true);
        var ids = new SpecialIds(gguf, pieces.Length) { Bos = 1, Eos = 2, Unk = 0 };
        ids.ReadAll();
        bool addBos = gguf.TryGetBool(Prefix + "add_bos_token") ?? true;
        bool addSpacePrefix = gguf.TryGetBool(Prefix + "add_space_prefix") ?? true;
        var vocab = Build(gguf, () => new TokenVocabulary(pieces, scores, types));
        var eog = ids.EndOfGeneration(vocab);
        CheckAddBos(gguf, addBos, ids.Bos);
        for (int i = 0; i < types.Length; i++)
            if (types[i] == TokenType.Byte)
                Build(gguf, () => SentencePieceBpeTokenizer.ParseByte(pieces[i]), "tokens");
        return Build(gguf, () => new SentencePieceBpeTokenizer(vocab, ids.Bos, ids.Eos, ids.Unk, addBos, addSpacePrefix, eog));
    }

    private static Gpt2BpeTokenizer BytePairs(GgufFile gguf)
    {
        var (pieces, scores, types) = ReadVocabulary(gguf, scoresRequired: false);
        string[] merges = gguf.TryGet<string[]>(Prefix + "merges") ?? throw Error(gguf, "merges", "required key is missing");
        for (int i = 0; i < merges.Length; i++)
        {
            int space = merges[i].IndexOf(' ', 1);
            if (space < 0 || space == merges[i].Length - 1 || merges[i].IndexOf(' ', space + 1) >= 0)
                throw Error(gguf, "merges", $"merge #{i} '{merges[i]}' is not two pieces separated by one space");
        }
        string? preName = gguf.TryGetString(Prefix + "pre");
        var pre = preName switch
        {
            null or "default" => BpePreTokenizer.Default,
            "gpt-2" or "phi-2" or "mpt" or "olmo" => BpePreTokenizer.Gpt2,
            "llama3" or "llama-v3" or "llama-bpe" or "falcon3" or "pixtral" => BpePreTokenizer.Llama3,
            "qwen2" or "deepseek-r1-qwen" or "megrez" or "stablelm2" => BpePreTokenizer.Qwen2,
            _ => throw Error(gguf, "pre", $"unsupported pre-tokenizer '{preName}' (supported: default, gpt-2, llama-bpe, qwen2 and their aliases)"),
        };
        var ids = new SpecialIds(gguf, pieces.Length) { Bos = 11, Eos = 11, Unk = -1 }; // llama.cpp's BPE defaults
        ids.ReadAll();
        bool addBos = gguf.TryGetBool(Prefix + "add_bos_token") ?? pre == BpePreTokenizer.Llama3;
        bool addSpacePrefix = gguf.TryGetBool(Prefix + "add_space_prefix") ?? false;
        var vocab = Build(gguf, () => new TokenVocabulary(pieces, scores, types));
        var eog = ids.EndOfGeneration(vocab);
        CheckAddBos(gguf, addBos, ids.Bos);
        return Build(gguf, () => new Gpt2BpeTokenizer(vocab, merges, pre, ids.Bos, ids.Eos, addBos, addSpacePrefix, eog), "merges");
    }

    private static (string[] Pieces, float[] Scores, TokenType[] Types) ReadVocabulary(GgufFile gguf, bool scoresRequired)
    {
        string[] pieces = gguf.TryGet<string[]>(Prefix + "tokens") ?? throw Error(gguf, "tokens", "required key is missing");
        if (pieces.Length == 0) throw Error(gguf, "tokens", "the vocabulary is empty");
        pieces = (string[])pieces.Clone(); // the vocabulary renames empty pieces; leave the file's metadata alone
        float[]? scores = gguf.TryGet<float[]>(Prefix + "scores");
        if (scores == null && scoresRequired)
            throw Error(gguf, "scores", "required key is missing (SentencePiece merges by score)");
        scores ??= new float[pieces.Length];
        if (scores.Length != pieces.Length)
            throw Error(gguf, "scores", $"{scores.Length} scores for {pieces.Length} tokens");
        int[]? rawTypes = gguf.TryGet<int[]>(Prefix + "token_type");
        if (rawTypes != null && rawTypes.Length != pieces.Length)
            throw Error(gguf, "token_type", $"{rawTypes.Length} token types for {pieces.Length} tokens");
        var types = new TokenType[pieces.Length];
        for (int i = 0; i < types.Length; i++)
        {
            int t = rawTypes?[i] ?? (int)TokenType.Normal;
            types[i] = t is >= 1 and <= 6 ? (TokenType)t : TokenType.Undefined; // llama.cpp: anything else is undefined
        }
        return (pieces, scores, types);
    }

    private static void CheckAddBos(GgufFile gguf, bool addBos, int bos)
    {
        if (addBos && bos < 0) throw Error(gguf, "add_bos_token", "is true but the vocabulary has no BOS token");
    }

    private static T Build<T>(GgufFile gguf, Func<T> build, string key = "tokens")
    {
        try { return build(); }
        catch (ArgumentException e) { throw Error(gguf, key, e.Message, e); }
    }

    private static ModelFormatException Error(GgufFile gguf, string key, string message, Exception? inner = null) =>
        new(gguf.Path, $"metadata '{Prefix}{key}'", 0, message, inner);

    /// <summary>Special token ids from metadata plus llama.cpp's detection of end-of-generation tokens by text.</summary>
    private sealed class SpecialIds(GgufFile gguf, int vocabSize)
    {
        public int Bos, Eos, Unk, Eot = -1, Eom = -1, FimPre = -1, FimSuf = -1, FimMid = -1, FimPad = -1, FimRep = -1, FimSep = -1;

        private static readonly string[] EotTexts =
            ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
             "<\uFF5Cend\u2581of\u2581sentence\uFF5C>", "<end_of_utterance>"];
        private static readonly string[] EomTexts = ["<|eom_id|>"];
        private static readonly string[] FimPreTexts =
            ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uFF5Cfim\u2581begin\uFF5C>", "<PRE>", "\u2581<PRE>", "<|code_prefix|>"];
        private static readonly string[] FimSufTexts =
            ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\uFF5Cfim\u2581hole\uFF5C>", "<SUF>", "\u2581<SUF>", "<|code_suffix|>"];
        private static readonly string[] FimMidTexts =
            ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uFF5Cfim\u2581end\uFF5C>", "<MID>", "\u2581<MID>", "<|code_middle|>"];
        private static readonly string[] FimPadTexts = ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"];
        private static readonly string[] FimRepTexts = ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
        private static readonly string[] FimSepTexts = ["<|file_sep|>"];
        private static readonly string[] EogTexts =
            ["<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
             "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>"];
        private static readonly string[] AlwaysRendered = ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

        public void ReadAll()
        {
            if (Bos >= vocabSize) Bos = -1;
            if (Eos >= vocabSize) Eos = -1;
            if (Unk >= vocabSize) Unk = -1;
            Read("bos_token_id", ref Bos);
            Read("eos_token_id", ref Eos);
            Read("unknown_token_id", ref Unk);
            Read("eot_token_id", ref Eot);
            Read("eom_token_id", ref Eom);
            Read("fim_pre_token_id", ref FimPre);
            Read("fim_suf_token_id", ref FimSuf);
            Read("fim_mid_token_id", ref FimMid);
            Read("fim_pad_token_id", ref FimPad);
            Read("fim_rep_token_id", ref FimRep);
            Read("fim_sep_token_id", ref FimSep);
            Read("prefix_token_id", ref FimPre); // deprecated names
            Read("suffix_token_id", ref FimSuf);
            Read("middle_token_id", ref FimMid);
        }

        /// <summary>An id key overrides the default; -1 / 0xFFFFFFFF (the converters' "none") keeps the default as in
        /// llama.cpp; any other id outside the vocabulary is an error (llama.cpp warns and keeps the default).</summary>
        private void Read(string key, ref int id)
        {
            long? v = gguf.TryGetInt(Prefix + key);
            if (v is null or -1 or uint.MaxValue) return;
            if (v < 0 || v >= vocabSize)
                throw Error(gguf, key, $"token id {v} is outside the vocabulary of {vocabSize} tokens");
            id = (int)v.Value;
        }

        /// <summary>Marks control-looking tokens as control and returns the end-of-generation set, following
        /// llama.cpp's llama_vocab::load (ids first in id order where llama.cpp walks a hash map).</summary>
        public List<int> EndOfGeneration(TokenVocabulary vocab)
        {
            Detect(vocab, ref Eot, EotTexts);
            Detect(vocab, ref Eom, EomTexts);
            Detect(vocab, ref FimPre, FimPreTexts);
            Detect(vocab, ref FimSuf, FimSufTexts);
            Detect(vocab, ref FimMid, FimMidTexts);
            Detect(vocab, ref FimPad, FimPadTexts);
            Detect(vocab, ref FimRep, FimRepTexts);
            Detect(vocab, ref FimSep, FimSepTexts);

            var eog = new SortedSet<int>();
            foreach (int id in (int[])[FimPad, FimRep, FimSep]) if (id >= 0) eog.Add(id);
            foreach (string text in EogTexts)
            {
                int id = vocab.Find(text);
                if (id < 0) continue;
                eog.Add(id);
                vocab.SetType(id, TokenType.Control);
            }
            foreach (string text in AlwaysRendered)
            {
                int id = vocab.Find(text);
                if (id >= 0) vocab.SetType(id, TokenType.UserDefined);
            }
            foreach (int id in (int[])[Eos, Eot, Eom]) if (id >= 0) eog.Add(id);
            // gpt-oss (o200k_harmony): "<|end|>" ends a message, not the generation.
            int end = vocab.Find("<|end|>"), ret = vocab.Find("<|return|>"), call = vocab.Find("<|call|>");
            if (end >= 0 && ret >= 0 && call >= 0 && eog.Contains(end) && eog.Contains(ret) && eog.Contains(call))
            {
                eog.Remove(end);
                vocab.SetType(end, TokenType.UserDefined);
            }
            return [.. eog];
        }

        private static void Detect(TokenVocabulary vocab, ref int id, string[] texts)
        {
            if (id >= 0) return;
            int best = -1;
            foreach (string text in texts)
            {
                int found = vocab.Find(text);
                if (found >= 0 && (best < 0 || found < best)) best = found;
            }
            if (best < 0) return;
            id = best;
            vocab.SetType(best, TokenType.Control);
        }
    }
}
