namespace Kvq.Tokenizers;

/// <summary>
/// The regex set that splits text into words before byte-level BPE, named after GGUF's tokenizer.ggml.pre values
/// (llama.cpp's LLAMA_VOCAB_PRE_TYPE_*).
/// </summary>
public enum BpePreTokenizer
{
    /// <summary>"default" or no pre key: punctuation runs, then GPT-2's regex, then digit runs cut into threes.</summary>
    Default,
    /// <summary>"gpt-2": GPT-2's regex.</summary>
    Gpt2,
    /// <summary>"llama3" / "llama-v3" / "llama-bpe": Llama-3's regex (digits in groups of up to 3); whole words
    /// that are in the vocabulary skip the merges.</summary>
    Llama3,
    /// <summary>"qwen2": Llama-3's regex with single digits.</summary>
    Qwen2,
}
