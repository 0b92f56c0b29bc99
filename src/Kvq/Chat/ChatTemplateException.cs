namespace Kvq.Chat;

/// <summary>
/// A chat template that cannot be parsed or rendered, or that refused the conversation itself (raise_exception).
/// <see cref="Line"/> and <see cref="Column"/> (1-based) locate the offending place in the template source.
/// </summary>
public sealed class ChatTemplateException : Exception
{
    public ChatTemplateException(ChatTemplateErrorKind kind, string reason, int line, int column, Exception? inner = null)
        : base($"chat template {Describe(kind)} at line {line}, column {column}: {reason}", inner)
    {
        Kind = kind;
        Reason = reason;
        Line = line;
        Column = column;
    }

    public ChatTemplateErrorKind Kind { get; }
    /// <summary>What went wrong, without the location; for <see cref="ChatTemplateErrorKind.Raised"/> exactly the
    /// template's own message (for example "Conversation roles must alternate user/assistant/user/assistant/...").</summary>
    public string Reason { get; }
    public int Line { get; }
    public int Column { get; }

    private static string Describe(ChatTemplateErrorKind kind) => kind switch
    {
        ChatTemplateErrorKind.Syntax => "syntax error",
        ChatTemplateErrorKind.Raised => "raised an exception",
        _ => "error",
    };
}
