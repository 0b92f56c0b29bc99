namespace Kvq.Tokenizers;

/// <summary>
/// Special token ids of a vocabulary (from GGUF metadata or Hugging Face tokenizer files) plus llama.cpp's detection
/// of end-of-generation, FIM and other special tokens by their text. -1 means none.
/// </summary>
internal sealed class SpecialTokenIds
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
