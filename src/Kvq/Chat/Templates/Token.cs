namespace Kvq.Chat.Templates;

internal readonly record struct Token(TokenKind Kind, string Value, SourcePos At)
{
    public bool Is(TokenKind kind, string value) => Kind == kind && Value == value;
    public bool IsOperator(string op) => Kind == TokenKind.Operator && Value == op;
    public bool IsName(string name) => Kind == TokenKind.Name && Value == name;

    public string Describe() => Kind switch
    {
        TokenKind.End => "end of template",
        TokenKind.Text => "template text",
        TokenKind.String => $"string '{Value}'",
        _ => $"'{Value}'",
    };
}
