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
        var ids = new SpecialTokenIds { Bos = 1, Eos = 2, Unk = 0 };
        ReadSpecialIds(gguf, ids, pieces.Length);
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
        var ids = new SpecialTokenIds { Bos = 11, Eos = 11, Unk = -1 }; // llama.cpp's BPE defaults
        ReadSpecialIds(gguf, ids, pieces.Length);
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

    /// <summary>Special token ids from tokenizer.ggml.*_token_id keys over the defaults already in <paramref name="ids"/>.</summary>
    private static void ReadSpecialIds(GgufFile gguf, SpecialTokenIds ids, int vocabSize)
    {
        if (ids.Bos >= vocabSize) ids.Bos = -1;
        if (ids.Eos >= vocabSize) ids.Eos = -1;
        if (ids.Unk >= vocabSize) ids.Unk = -1;
        Read("bos_token_id", ref ids.Bos);
        Read("eos_token_id", ref ids.Eos);
        Read("unknown_token_id", ref ids.Unk);
        Read("eot_token_id", ref ids.Eot);
        Read("eom_token_id", ref ids.Eom);
        Read("fim_pre_token_id", ref ids.FimPre);
        Read("fim_suf_token_id", ref ids.FimSuf);
        Read("fim_mid_token_id", ref ids.FimMid);
        Read("fim_pad_token_id", ref ids.FimPad);
        Read("fim_rep_token_id", ref ids.FimRep);
        Read("fim_sep_token_id", ref ids.FimSep);
        Read("prefix_token_id", ref ids.FimPre); // deprecated names
        Read("suffix_token_id", ref ids.FimSuf);
        Read("middle_token_id", ref ids.FimMid);

        // An id key overrides the default; -1 / 0xFFFFFFFF (the converters' "none") keeps the default as in
        // llama.cpp; any other id outside the vocabulary is an error (llama.cpp warns and keeps the default).
        void Read(string key, ref int id)
        {
            long? v = gguf.TryGetInt(Prefix + key);
            if (v is null or -1 or uint.MaxValue) return;
            if (v < 0 || v >= vocabSize)
                throw Error(gguf, key, $"token id {v} is outside the vocabulary of {vocabSize} tokens");
            id = (int)v.Value;
        }
    }
}
