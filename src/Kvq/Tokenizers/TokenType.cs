namespace Kvq.Tokenizers;

/// <summary>Kind of a vocabulary entry: GGUF's tokenizer.ggml.token_type values (llama.cpp's llama_token_type).</summary>
public enum TokenType
{
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}
