namespace Kvq.Chat.Templates;

internal enum TokenKind
{
    Text,        // literal template text between tags (whitespace control already applied)
    VarStart,    // {{
    VarEnd,      // }}
    BlockStart,  // {%
    BlockEnd,    // %}
    Name,
    String,      // value: the unescaped contents
    Integer,
    Float,
    Operator,    // + - * / // % ** ~ ( ) [ ] { } , . : | = == != < > <= >=
    End,         // end of the source
}
