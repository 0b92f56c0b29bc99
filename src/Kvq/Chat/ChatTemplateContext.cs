using Kvq.Tokenizers;

namespace Kvq.Chat;

/// <summary>
/// The variables a chat template renders with besides the messages, as transformers' apply_chat_template passes them:
/// bos_token, eos_token, add_generation_prompt, tools (none unless given) and any extra ones (enable_thinking,
/// date_string, ...).
/// </summary>
public sealed record ChatTemplateContext
{
    public string BosToken { get; init; } = "";
    public string EosToken { get; init; } = "";

    /// <summary>Whether the prompt ends with the assistant's turn header, ready for the model to answer (what a chat
    /// front end wants); false renders the conversation as it is.</summary>
    public bool AddGenerationPrompt { get; init; } = true;

    /// <summary>Tool (function) definitions, usually OpenAI-style {"type": "function", "function": {...}} objects as
    /// JsonElement, JsonNode or dictionaries; null renders as none.</summary>
    public IReadOnlyList<object?>? Tools { get; init; }

    /// <summary>More template variables; values: strings, numbers, booleans, null, lists, string-keyed dictionaries,
    /// JsonElement or JsonNode. They may override the ones above.</summary>
    public IReadOnlyDictionary<string, object?>? Variables { get; init; }

    /// <summary>The clock strftime_now() reads (Llama 3.x put today's date in the system prompt); fixed in tests.</summary>
    public TimeProvider Clock { get; init; } = TimeProvider.System;

    /// <summary>Most output a render may produce before it is stopped (characters).</summary>
    public int MaxOutputChars { get; init; } = 16 << 20;

    /// <summary>bos_token and eos_token as the tokenizer spells them ("" when the vocabulary has none).</summary>
    public static ChatTemplateContext For(ITokenizer tokenizer) => new()
    {
        BosToken = tokenizer.BosId >= 0 ? tokenizer.Piece(tokenizer.BosId) : "",
        EosToken = tokenizer.EosId >= 0 ? tokenizer.Piece(tokenizer.EosId) : "",
    };
}
