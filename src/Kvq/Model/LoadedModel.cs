using Kvq.Chat;
using Kvq.Tokenizers;

namespace Kvq.Model;

/// <summary>Weights, the tokenizer that goes with them, and the model's chat template if it has one.</summary>
/// <param name="chatTemplate">the chat template's source (GGUF tokenizer.chat_template, a Hugging Face folder's
/// chat_template), or null.</param>
public sealed class LoadedModel(ModelWeights weights, ITokenizer tokenizer, string? chatTemplate = null) : IDisposable
{
    private readonly Lazy<ChatTemplate?> _chatTemplate = new(() => chatTemplate == null ? null : ChatTemplate.Parse(chatTemplate));

    public ModelWeights Weights { get; } = weights;
    public ITokenizer Tokenizer { get; } = tokenizer;

    /// <summary>The source text of the model's chat template, or null when the model has none.</summary>
    public string? ChatTemplateSource { get; } = chatTemplate;

    /// <summary>The model's chat template, parsed on first use; null when the model has none (callers say that chat
    /// needs a template, e.g. from --chat-template FILE through <see cref="ChatTemplate.Parse"/>).</summary>
    /// <exception cref="ChatTemplateException">the model's template is not one Kvq can parse.</exception>
    public ChatTemplate? ChatTemplate => _chatTemplate.Value;

    /// <summary>bos_token and eos_token of this model's tokenizer, for rendering its template.</summary>
    public ChatTemplateContext ChatContext() => ChatTemplateContext.For(Tokenizer);

    public void Dispose() => Weights.Dispose();
}
