namespace Kvq.Chat.Templates;

/// <summary>Expression nodes of the template AST; each keeps its source position for error messages.</summary>
internal abstract record Expr(SourcePos At)
{
    public sealed record Literal(object? Value, SourcePos At) : Expr(At);
    public sealed record Var(string Id, SourcePos At) : Expr(At);
    public sealed record ListLiteral(List<Expr> Items, SourcePos At) : Expr(At);
    /// <summary>A tuple: rendered and compared like a list (the templates never tell the two apart).</summary>
    public sealed record TupleLiteral(List<Expr> Items, SourcePos At) : Expr(At);
    public sealed record DictLiteral(List<(Expr Key, Expr Value)> Items, SourcePos At) : Expr(At);
    /// <summary>obj.name</summary>
    public sealed record Attribute(Expr Target, string Name, SourcePos At) : Expr(At);
    /// <summary>obj[key]</summary>
    public sealed record Item(Expr Target, Expr Key, SourcePos At) : Expr(At);
    /// <summary>obj[start:stop:step]</summary>
    public sealed record Slice(Expr Target, Expr? Start, Expr? Stop, Expr? Step, SourcePos At) : Expr(At);
    public sealed record Call(Expr Callee, Arguments Args, SourcePos At) : Expr(At);
    /// <summary>value | name(args)</summary>
    public sealed record Filter(Expr Value, string Name, Arguments Args, SourcePos At) : Expr(At);
    /// <summary>value is [not] name(args)</summary>
    public sealed record Is(Expr Value, string Name, Arguments Args, bool Negated, SourcePos At) : Expr(At);
    /// <summary>Operators "not", "-", "+".</summary>
    public sealed record Unary(string Op, Expr Operand, SourcePos At) : Expr(At);
    /// <summary>Arithmetic, "~", comparisons, "in", "not in", "and", "or".</summary>
    public sealed record Binary(string Op, Expr Left, Expr Right, SourcePos At) : Expr(At);
    /// <summary>then if test else otherwise (otherwise null: undefined).</summary>
    public sealed record Conditional(Expr Then, Expr Test, Expr? Otherwise, SourcePos At) : Expr(At);
}

/// <summary>Positional and keyword arguments of a call, filter or test, in source order.</summary>
internal sealed record Arguments(List<Expr> Positional, List<(string Name, Expr Value)> Keywords)
{
    public static readonly Arguments None = new([], []);
}
