namespace Kvq.Chat.Templates;

/// <summary>Statement nodes of the template AST.</summary>
internal abstract record Stmt(SourcePos At)
{
    public sealed record Text(string Value, SourcePos At) : Stmt(At);
    /// <summary>{{ expr }}</summary>
    public sealed record Output(Expr Value, SourcePos At) : Stmt(At);
    public sealed record If(List<(Expr Test, List<Stmt> Body)> Branches, List<Stmt>? Else, SourcePos At) : Stmt(At);
    /// <summary>{% for target in iterable [if filter] %} body [{% else %} empty] {% endfor %}</summary>
    public sealed record For(Expr Target, Expr Iterable, Expr? Filter, List<Stmt> Body, List<Stmt>? Else, SourcePos At) : Stmt(At);
    /// <summary>{% set target = value %}; target: a name, a tuple of names, or ns.attr.</summary>
    public sealed record Set(Expr Target, Expr Value, SourcePos At) : Stmt(At);
    /// <summary>{% set name %}body{% endset %}</summary>
    public sealed record SetBlock(string Name, List<Stmt> Body, SourcePos At) : Stmt(At);
    public sealed record Macro(string Name, List<(string Name, Expr? Default)> Parameters, List<Stmt> Body, SourcePos At) : Stmt(At);
    /// <summary>{% call [(params)] macro(args) %}body{% endcall %}: the body is the macro's caller().</summary>
    public sealed record CallBlock(Expr.Call Call, List<(string Name, Expr? Default)> Parameters, List<Stmt> Body, SourcePos At) : Stmt(At);
    /// <summary>{% filter name(args) %}body{% endfilter %}</summary>
    public sealed record FilterBlock(List<(string Name, Arguments Args)> Filters, List<Stmt> Body, SourcePos At) : Stmt(At);
    public sealed record Break(SourcePos At) : Stmt(At);
    public sealed record Continue(SourcePos At) : Stmt(At);
}
