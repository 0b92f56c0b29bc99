using Kvq.Chat;
using Kvq.Model;
using Kvq.Tokenizers;

namespace Kvq.Serving;

/// <summary>One message of a conversation as the chat front ends (the server, the IChatClient, kvq chat) pass it on.</summary>
/// <param name="Role">"system", "user", "assistant" or "tool" (the template decides what it accepts).</param>
public sealed record ChatTurn(string Role, string Content);

/// <summary>
/// The one seam between chat front ends and chat templates: a conversation in, the prompt text the model was trained
/// on out (ending with the assistant's turn header, ready for the answer).
/// </summary>
public interface IChatPrompt
{
    /// <exception cref="ChatPromptException">the template refused the conversation or failed to render it.</exception>
    string Render(IReadOnlyList<ChatTurn> messages);
}

/// <summary>A conversation a chat template cannot turn into a prompt. <see cref="Refused"/>: the template itself
/// refused these messages (raise_exception, e.g. roles that do not alternate), the caller's mistake; otherwise the
/// template failed.</summary>
public sealed class ChatPromptException(string message, bool refused, Exception? inner = null) : Exception(message, inner)
{
    public bool Refused { get; } = refused;
}

/// <summary>Turning rendered prompts into tokens.</summary>
public static class ChatPrompts
{
    /// <summary>Prompt tokens of a rendered conversation. The template writes special tokens as text (its turn
    /// markers, often BOS), so they are parsed as special tokens; BOS is put in front only when the model wants one and
    /// the template did not write it.</summary>
    public static int[] Encode(ITokenizer tokenizer, string prompt)
    {
        string bos = tokenizer.BosId >= 0 ? tokenizer.Piece(tokenizer.BosId) : "";
        bool bosWritten = bos.Length > 0 && prompt.StartsWith(bos, StringComparison.Ordinal);
        return tokenizer.Encode(prompt, addBos: tokenizer.AddBos && !bosWritten, parseSpecial: true);
    }
}

/// <summary>The <see cref="IChatPrompt"/> of a Jinja chat template (<see cref="ChatTemplate"/>), rendered with the
/// model's bos/eos tokens and the generation prompt on.</summary>
public sealed class TemplateChatPrompt(ChatTemplate template, ChatTemplateContext context) : IChatPrompt
{
    public ChatTemplate Template { get; } = template;

    /// <summary>The model's own template; null when it has none.</summary>
    /// <exception cref="ChatTemplateException">the model's template is not one Kvq can parse.</exception>
    public static TemplateChatPrompt? For(LoadedModel model) =>
        model.ChatTemplate is { } t ? new TemplateChatPrompt(t, model.ChatContext()) : null;

    /// <summary>A template's source (e.g. --chat-template FILE) for this tokenizer.</summary>
    /// <exception cref="ChatTemplateException">the source is not a template Kvq can parse.</exception>
    public static TemplateChatPrompt Parse(string source, ITokenizer tokenizer) =>
        new(ChatTemplate.Parse(source), ChatTemplateContext.For(tokenizer));

    public string Render(IReadOnlyList<ChatTurn> messages)
    {
        var list = new List<ChatMessage>(messages.Count);
        foreach (var m in messages) list.Add(new ChatMessage(m.Role, m.Content));
        try
        {
            return Template.Render(list, context);
        }
        catch (ChatTemplateException e)
        {
            bool refused = e.Kind == ChatTemplateErrorKind.Raised;
            throw new ChatPromptException(refused ? e.Reason : e.Message, refused, e);
        }
    }
}
