namespace Kvq.Chat.Templates;

/// <summary>A 1-based line and column in the template source.</summary>
internal readonly record struct SourcePos(int Line, int Column)
{
    public ChatTemplateException Syntax(string reason) => new(ChatTemplateErrorKind.Syntax, reason, Line, Column);
    public ChatTemplateException Render(string reason, Exception? inner = null) =>
        new(ChatTemplateErrorKind.Render, reason, Line, Column, inner);
}
