using System.Globalization;

namespace Kvq.Chat.Templates;

/// <summary>
/// Recursive-descent parser from tokens to the statement list, with Jinja's operator precedence (lowest first):
/// "x if c else y", or, and, not, comparisons and in / not in, + and -, ~, * / // %, **, unary - +, then postfix
/// (.attr, [key], [a:b:c], call(...)) with filters (| name) and tests (is [not] name) binding tightest.
/// </summary>
internal sealed class TemplateParser
{
    /// <summary>Deeper nesting (brackets, parentheses, blocks) is refused rather than risking the stack.</summary>
    public const int MaxDepth = 128;

    private readonly List<Token> _tokens;
    private int _i;
    private int _depth;

    private TemplateParser(List<Token> tokens) => _tokens = tokens;

    public static List<Stmt> Parse(string source)
    {
        var parser = new TemplateParser(TemplateLexer.Tokenize(source));
        var body = parser.Block(out var end);
        if (end != null) throw end.Value.At.Syntax($"unexpected '{end.Value.Value}' with no block to close");
        return body;
    }

    private Token Peek => _tokens[_i];
    private Token PeekAt(int k) => _tokens[Math.Min(_i + k, _tokens.Count - 1)];
    private Token Take() => _tokens[_i++];

    private Token Expect(TokenKind kind, string what)
    {
        var t = Peek;
        if (t.Kind != kind) throw t.At.Syntax($"expected {what}, found {t.Describe()}");
        _i++;
        return t;
    }

    private void ExpectOperator(string op)
    {
        if (!Peek.IsOperator(op)) throw Peek.At.Syntax($"expected '{op}', found {Peek.Describe()}");
        _i++;
    }

    private bool SkipOperator(string op)
    {
        if (!Peek.IsOperator(op)) return false;
        _i++;
        return true;
    }

    private bool SkipName(string name)
    {
        if (!Peek.IsName(name)) return false;
        _i++;
        return true;
    }

    private void Enter(SourcePos at)
    {
        if (++_depth > MaxDepth) throw at.Syntax($"nested more than {MaxDepth} deep");
    }

    // ---- statements ----

    /// <summary>Statements up to the end of the source or a block tag that this level does not open (endfor, else,
    /// ...), which is returned in <paramref name="end"/> with the parser positioned after its name.</summary>
    private List<Stmt> Block(out Token? end)
    {
        var body = new List<Stmt>();
        while (true)
        {
            var t = Take();
            switch (t.Kind)
            {
                case TokenKind.End:
                    _i--;
                    end = null;
                    return body;
                case TokenKind.Text:
                    body.Add(new Stmt.Text(t.Value, t.At));
                    break;
                case TokenKind.VarStart:
                    var value = Expression();
                    Expect(TokenKind.VarEnd, "'}}'");
                    body.Add(new Stmt.Output(value, t.At));
                    break;
                case TokenKind.BlockStart:
                    var name = Expect(TokenKind.Name, "a statement name (if, for, set, ...)");
                    var stmt = Statement(name);
                    if (stmt == null)
                    {
                        end = name;
                        return body;
                    }
                    body.Add(stmt);
                    break;
                default:
                    throw t.At.Syntax($"unexpected {t.Describe()}");
            }
        }
    }

    private List<Stmt> BlockUntil(SourcePos opened, string opener, out Token end, params string[] ends)
    {
        Enter(opened);
        var body = Block(out var stop);
        _depth--;
        if (stop == null)
            throw opened.Syntax($"'{opener}' opened here is never closed (expected {string.Join(" or ", ends.Select(e => $"'{e}'"))})");
        if (!ends.Contains(stop.Value.Value))
            throw stop.Value.At.Syntax($"unexpected '{stop.Value.Value}' inside '{opener}' (expected {string.Join(" or ", ends.Select(e => $"'{e}'"))})");
        end = stop.Value;
        return body;
    }

    private void EndTag() => Expect(TokenKind.BlockEnd, "'%}'");

    /// <summary>The statement a block tag opens, or null for a closing/intermediate tag.</summary>
    private Stmt? Statement(Token name)
    {
        switch (name.Value)
        {
            case "if": return If(name);
            case "for": return For(name);
            case "set": return Set(name);
            case "macro": return Macro(name);
            case "call": return CallBlock(name);
            case "filter": return FilterBlock(name);
            case "break": EndTag(); return new Stmt.Break(name.At);
            case "continue": EndTag(); return new Stmt.Continue(name.At);
            case "generation":
                // transformers' {% generation %} marks assistant text for training masks; it renders its body as is.
                EndTag();
                var body = BlockUntil(name.At, "generation", out _, "endgeneration");
                EndTag();
                return new Stmt.If([(new Expr.Literal(true, name.At), body)], null, name.At);
            case "elif" or "else" or "endif" or "endfor" or "endset" or "endmacro" or "endcall" or "endfilter" or "endgeneration":
                return null;
            default:
                throw name.At.Syntax($"unknown statement '{name.Value}'");
        }
    }

    private Stmt If(Token name)
    {
        var branches = new List<(Expr, List<Stmt>)>();
        List<Stmt>? otherwise = null;
        var test = Expression();
        EndTag();
        while (true)
        {
            var body = BlockUntil(name.At, "if", out var end, "elif", "else", "endif");
            branches.Add((test, body));
            if (end.Value == "elif")
            {
                test = Expression();
                EndTag();
                continue;
            }
            EndTag();
            if (end.Value == "else")
            {
                otherwise = BlockUntil(name.At, "if", out _, "endif");
                EndTag();
            }
            return new Stmt.If(branches, otherwise, name.At);
        }
    }

    private Stmt For(Token name)
    {
        var target = AssignTarget(allowAttribute: false);
        if (!SkipName("in")) throw Peek.At.Syntax($"expected 'in' after the loop variable, found {Peek.Describe()}");
        // The iterable stops before "if" (an inline filter), so the ternary form is not read here.
        var iterable = Or();
        Expr? filter = SkipName("if") ? Expression() : null;
        if (SkipName("recursive")) throw name.At.Syntax("recursive loops are not supported");
        EndTag();
        var body = BlockUntil(name.At, "for", out var end, "else", "endfor");
        EndTag();
        List<Stmt>? otherwise = null;
        if (end.Value == "else")
        {
            otherwise = BlockUntil(name.At, "for", out _, "endfor");
            EndTag();
        }
        return new Stmt.For(target, iterable, filter, body, otherwise, name.At);
    }

    private Stmt Set(Token name)
    {
        var target = AssignTarget(allowAttribute: true);
        if (Peek.Kind == TokenKind.BlockEnd && target is Expr.Var block)
        {
            EndTag();
            var body = BlockUntil(name.At, "set", out _, "endset");
            EndTag();
            return new Stmt.SetBlock(block.Id, body, name.At);
        }
        ExpectOperator("=");
        var value = TupleOrExpression();
        EndTag();
        return new Stmt.Set(target, value, name.At);
    }

    /// <summary>name, name.attr (for set), or a tuple of names ("k, v" or "(k, v)").</summary>
    private Expr AssignTarget(bool allowAttribute)
    {
        var at = Peek.At;
        bool paren = SkipOperator("(");
        var names = new List<Expr> { OneTarget(allowAttribute) };
        while (SkipOperator(",")) names.Add(OneTarget(allowAttribute: false));
        if (paren) ExpectOperator(")");
        return names.Count == 1 && !paren ? names[0] : new Expr.TupleLiteral(names, at);
    }

    private Expr OneTarget(bool allowAttribute)
    {
        var t = Expect(TokenKind.Name, "a variable name");
        Expr target = new Expr.Var(t.Value, t.At);
        if (allowAttribute && SkipOperator("."))
        {
            var attr = Expect(TokenKind.Name, "an attribute name");
            target = new Expr.Attribute(target, attr.Value, attr.At);
        }
        return target;
    }

    private Stmt Macro(Token name)
    {
        var id = Expect(TokenKind.Name, "the macro's name");
        var parameters = Parameters();
        EndTag();
        var body = BlockUntil(name.At, "macro", out _, "endmacro");
        EndTag();
        return new Stmt.Macro(id.Value, parameters, body, name.At);
    }

    private List<(string, Expr?)> Parameters()
    {
        var list = new List<(string, Expr?)>();
        ExpectOperator("(");
        while (!SkipOperator(")"))
        {
            if (list.Count > 0) ExpectOperator(",");
            if (SkipOperator(")")) break;
            var p = Expect(TokenKind.Name, "a parameter name");
            list.Add((p.Value, SkipOperator("=") ? Expression() : null));
        }
        return list;
    }

    private Stmt CallBlock(Token name)
    {
        var parameters = Peek.IsOperator("(") ? Parameters() : [];
        var call = Postfix(Primary()) as Expr.Call ?? throw name.At.Syntax("expected a macro call after 'call'");
        EndTag();
        var body = BlockUntil(name.At, "call", out _, "endcall");
        EndTag();
        return new Stmt.CallBlock(call, parameters, body, name.At);
    }

    private Stmt FilterBlock(Token name)
    {
        var filters = new List<(string, Arguments)>();
        do
        {
            var f = FilterName();
            filters.Add((f, Peek.IsOperator("(") ? CallArguments() : Arguments.None));
        } while (SkipOperator("|"));
        EndTag();
        var body = BlockUntil(name.At, "filter", out _, "endfilter");
        EndTag();
        return new Stmt.FilterBlock(filters, body, name.At);
    }

    // ---- expressions ----

    /// <summary>An expression, or an unbracketed tuple "a, b" (the right side of set).</summary>
    private Expr TupleOrExpression()
    {
        var first = Expression();
        if (!Peek.IsOperator(",")) return first;
        var items = new List<Expr> { first };
        while (SkipOperator(",")) items.Add(Expression());
        return new Expr.TupleLiteral(items, first.At);
    }

    private Expr Expression()
    {
        Enter(Peek.At);
        var value = Or();
        while (Peek.IsName("if"))
        {
            var at = Take().At;
            var test = Or();
            Expr? otherwise = SkipName("else") ? Or() : null;
            value = new Expr.Conditional(value, test, otherwise, at);
        }
        _depth--;
        return value;
    }

    private Expr Or()
    {
        var left = And();
        while (Peek.IsName("or"))
        {
            var at = Take().At;
            left = new Expr.Binary("or", left, And(), at);
        }
        return left;
    }

    private Expr And()
    {
        var left = Not();
        while (Peek.IsName("and"))
        {
            var at = Take().At;
            left = new Expr.Binary("and", left, Not(), at);
        }
        return left;
    }

    private Expr Not()
    {
        if (Peek.IsName("not"))
        {
            var at = Take().At;
            return new Expr.Unary("not", Not(), at);
        }
        return Compare();
    }

    private static readonly HashSet<string> Comparisons = ["==", "!=", "<", ">", "<=", ">="];

    private Expr Compare()
    {
        var left = Sum();
        while (true)
        {
            var t = Peek;
            if (t.Kind == TokenKind.Operator && Comparisons.Contains(t.Value))
            {
                _i++;
                left = new Expr.Binary(t.Value, left, Sum(), t.At);
            }
            else if (t.IsName("in"))
            {
                _i++;
                left = new Expr.Binary("in", left, Sum(), t.At);
            }
            else if (t.IsName("not") && PeekAt(1).IsName("in"))
            {
                _i += 2;
                left = new Expr.Binary("not in", left, Sum(), t.At);
            }
            else return left;
        }
    }

    private Expr Sum()
    {
        var left = Concat();
        while (Peek.IsOperator("+") || Peek.IsOperator("-"))
        {
            var t = Take();
            left = new Expr.Binary(t.Value, left, Concat(), t.At);
        }
        return left;
    }

    private Expr Concat()
    {
        var left = Product();
        while (Peek.IsOperator("~"))
        {
            var t = Take();
            left = new Expr.Binary("~", left, Product(), t.At);
        }
        return left;
    }

    private Expr Product()
    {
        var left = Power();
        while (Peek.Kind == TokenKind.Operator && Peek.Value is "*" or "/" or "//" or "%")
        {
            var t = Take();
            left = new Expr.Binary(t.Value, left, Power(), t.At);
        }
        return left;
    }

    private Expr Power()
    {
        var left = Unary(withFilters: true);
        while (Peek.IsOperator("**"))
        {
            var t = Take();
            left = new Expr.Binary("**", left, Unary(withFilters: true), t.At);
        }
        return left;
    }

    /// <summary>As Jinja: "-x|f" is f(-x), the sign applies before the filters.</summary>
    private Expr Unary(bool withFilters)
    {
        Expr value;
        if (Peek.IsOperator("-") || Peek.IsOperator("+"))
        {
            var t = Take();
            Enter(t.At);
            value = new Expr.Unary(t.Value, Unary(withFilters: false), t.At);
            _depth--;
        }
        else value = Postfix(Primary());
        return withFilters ? FiltersAndTests(value) : value;
    }

    private Expr Primary()
    {
        var t = Take();
        switch (t.Kind)
        {
            case TokenKind.Name:
                return t.Value switch
                {
                    "true" or "True" => new Expr.Literal(true, t.At),
                    "false" or "False" => new Expr.Literal(false, t.At),
                    "none" or "None" => new Expr.Literal(null, t.At),
                    _ => new Expr.Var(t.Value, t.At),
                };
            case TokenKind.String:
                // Adjacent string literals concatenate, as in Python.
                string s = t.Value;
                while (Peek.Kind == TokenKind.String) s += Take().Value;
                return new Expr.Literal(s, t.At);
            case TokenKind.Integer:
                return new Expr.Literal(long.Parse(t.Value, CultureInfo.InvariantCulture), t.At);
            case TokenKind.Float:
                return new Expr.Literal(double.Parse(t.Value, CultureInfo.InvariantCulture), t.At);
            case TokenKind.Operator when t.Value == "(":
                return Parenthesised(t);
            case TokenKind.Operator when t.Value == "[":
                return new Expr.ListLiteral(Items("]"), t.At);
            case TokenKind.Operator when t.Value == "{":
                return Dict(t);
            default:
                throw t.At.Syntax($"expected a value, found {t.Describe()}");
        }
    }

    private Expr Parenthesised(Token open)
    {
        Enter(open.At);
        if (SkipOperator(")"))
        {
            _depth--;
            return new Expr.TupleLiteral([], open.At);
        }
        var first = Expression();
        Expr result = first;
        if (Peek.IsOperator(","))
        {
            var items = new List<Expr> { first };
            while (SkipOperator(",") && !Peek.IsOperator(")")) items.Add(Expression());
            result = new Expr.TupleLiteral(items, open.At);
        }
        ExpectOperator(")");
        _depth--;
        return result;
    }

    private List<Expr> Items(string close)
    {
        Enter(Peek.At);
        var items = new List<Expr>();
        while (!SkipOperator(close))
        {
            if (items.Count > 0)
            {
                ExpectOperator(",");
                if (SkipOperator(close)) break;
            }
            items.Add(Expression());
        }
        _depth--;
        return items;
    }

    private Expr Dict(Token open)
    {
        Enter(open.At);
        var items = new List<(Expr, Expr)>();
        while (!SkipOperator("}"))
        {
            if (items.Count > 0)
            {
                ExpectOperator(",");
                if (SkipOperator("}")) break;
            }
            var key = Expression();
            ExpectOperator(":");
            items.Add((key, Expression()));
        }
        _depth--;
        return new Expr.DictLiteral(items, open.At);
    }

    private Expr Postfix(Expr value)
    {
        while (true)
        {
            var t = Peek;
            if (t.IsOperator("."))
            {
                _i++;
                var name = Take();
                if (name.Kind == TokenKind.Name)
                    value = new Expr.Attribute(value, name.Value, name.At);
                else if (name.Kind == TokenKind.Integer) // items.0
                    value = new Expr.Item(value, new Expr.Literal(long.Parse(name.Value, CultureInfo.InvariantCulture), name.At), name.At);
                else throw name.At.Syntax($"expected an attribute name after '.', found {name.Describe()}");
            }
            else if (t.IsOperator("["))
            {
                _i++;
                value = Subscript(value, t.At);
            }
            else if (t.IsOperator("("))
                value = new Expr.Call(value, CallArguments(), value.At); // errors point at the callee
            else return value;
        }
    }

    private Expr Subscript(Expr target, SourcePos at)
    {
        Enter(at);
        Expr? start = null, stop = null, step = null;
        bool slice = false;
        if (!Peek.IsOperator(":")) start = Expression();
        if (SkipOperator(":"))
        {
            slice = true;
            if (!Peek.IsOperator(":") && !Peek.IsOperator("]")) stop = Expression();
            if (SkipOperator(":") && !Peek.IsOperator("]")) step = Expression();
        }
        ExpectOperator("]");
        _depth--;
        return slice ? new Expr.Slice(target, start, stop, step, at) : new Expr.Item(target, start!, at);
    }

    private Arguments CallArguments()
    {
        var at = Peek.At;
        ExpectOperator("(");
        Enter(at);
        var positional = new List<Expr>();
        var keywords = new List<(string, Expr)>();
        while (!SkipOperator(")"))
        {
            if (positional.Count + keywords.Count > 0)
            {
                ExpectOperator(",");
                if (SkipOperator(")")) break;
            }
            if (Peek.Kind == TokenKind.Name && PeekAt(1).IsOperator("="))
            {
                var key = Take();
                _i++;
                keywords.Add((key.Value, Expression()));
            }
            else
            {
                if (keywords.Count > 0) throw Peek.At.Syntax("positional argument after a keyword argument");
                positional.Add(Expression());
            }
        }
        _depth--;
        return new Arguments(positional, keywords);
    }

    private string FilterName()
    {
        var name = Expect(TokenKind.Name, "a filter name");
        string full = name.Value;
        while (Peek.IsOperator(".") && PeekAt(1).Kind == TokenKind.Name)
        {
            _i++;
            full += "." + Take().Value;
        }
        return full;
    }

    private static readonly HashSet<string> NotTestArguments = ["else", "or", "and", "if", "in", "not", "is"];

    private Expr FiltersAndTests(Expr value)
    {
        while (true)
        {
            if (Peek.IsOperator("|"))
            {
                var at = Take().At;
                string name = FilterName();
                var args = Peek.IsOperator("(") ? CallArguments() : Arguments.None;
                value = new Expr.Filter(value, name, args, at);
            }
            else if (Peek.IsName("is"))
            {
                var at = Take().At;
                bool negated = SkipName("not");
                var name = Expect(TokenKind.Name, "a test name after 'is'");
                Arguments args;
                if (Peek.IsOperator("(")) args = CallArguments();
                else if (Peek.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float ||
                         Peek.Kind == TokenKind.Name && !NotTestArguments.Contains(Peek.Value) ||
                         Peek.IsOperator("[") || Peek.IsOperator("{"))
                    args = new Arguments([Postfix(Primary())], []); // "x is divisibleby 3", "x is sameas false"
                else args = Arguments.None;
                value = new Expr.Is(value, name.Value, args, negated, at);
            }
            else return value;
        }
    }
}
