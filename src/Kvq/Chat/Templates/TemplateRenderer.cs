using System.Text;
using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>
/// Walks the AST of one template for one render. Bounded, so that a hostile template (from a GGUF or a request)
/// fails with a <see cref="ChatTemplateException"/> instead of hanging or exhausting memory: output length, loop
/// iterations and macro call depth are capped.
/// </summary>
internal sealed class TemplateRenderer(int maxOutputChars)
{
    public const int MaxIterations = 1_000_000;
    public const int MaxCallDepth = 64;

    private int _iterations;
    private int _callDepth;

    public enum Flow { Normal, Break, Continue }

    public string Render(List<Stmt> body, Scope scope)
    {
        var output = new StringBuilder();
        Exec(body, scope, output);
        return output.ToString();
    }

    public void Call(Callable macro, SourcePos at, Action body)
    {
        if (++_callDepth > MaxCallDepth) throw at.Render($"macro '{macro.Name}' nested more than {MaxCallDepth} calls deep");
        try { body(); }
        finally { _callDepth--; }
    }

    private void Append(StringBuilder output, string text, SourcePos at)
    {
        if (output.Length + (long)text.Length > maxOutputChars)
            throw at.Render($"output longer than the limit of {maxOutputChars} characters");
        output.Append(text);
    }

    public Flow Exec(List<Stmt> body, Scope scope, StringBuilder output)
    {
        foreach (var stmt in body)
        {
            var flow = Exec(stmt, scope, output);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    private Flow Exec(Stmt stmt, Scope scope, StringBuilder output)
    {
        switch (stmt)
        {
            case Stmt.Text t:
                Append(output, t.Value, t.At);
                return Flow.Normal;
            case Stmt.Output o:
                Append(output, Py.Str(Eval(o.Value, scope)), o.At);
                return Flow.Normal;
            case Stmt.If i:
                foreach (var (test, branch) in i.Branches)
                    if (Py.Truthy(Eval(test, scope))) return Exec(branch, scope, output);
                return i.Else == null ? Flow.Normal : Exec(i.Else, scope, output);
            case Stmt.For f:
                return For(f, scope, output);
            case Stmt.Set s:
                Assign(s.Target, Eval(s.Value, scope), scope, s.At);
                return Flow.Normal;
            case Stmt.SetBlock sb:
                var captured = new StringBuilder();
                Exec(sb.Body, scope, captured);
                scope.Set(sb.Name, captured.ToString());
                return Flow.Normal;
            case Stmt.Macro m:
                scope.Set(m.Name, new MacroFunction(m.Name, m.Parameters, m.Body, scope, this));
                return Flow.Normal;
            case Stmt.CallBlock c:
                var caller = new MacroFunction("caller", c.Parameters, c.Body, scope, this);
                var args = Arguments(c.Call.Args, scope, c.Call.At);
                args.Keywords["caller"] = caller;
                Append(output, Py.Str(Invoke(Eval(c.Call.Callee, scope), args, c.Call.Callee)), c.At);
                return Flow.Normal;
            case Stmt.FilterBlock fb:
                var body = new StringBuilder();
                Exec(fb.Body, scope, body);
                object? value = body.ToString();
                foreach (var (name, fargs) in fb.Filters) value = Filters.Apply(name, value, Arguments(fargs, scope, fb.At));
                Append(output, Py.Str(value), fb.At);
                return Flow.Normal;
            case Stmt.Break:
                return Flow.Break;
            case Stmt.Continue:
                return Flow.Continue;
            default:
                throw stmt.At.Render($"unsupported statement {stmt.GetType().Name}");
        }
    }

    private Flow For(Stmt.For f, Scope scope, StringBuilder output)
    {
        var source = Eval(f.Iterable, scope);
        var items = Py.Iterate(source) ?? throw f.Iterable.At.Render($"'{Py.TypeName(source)}' object is not iterable");
        if (f.Filter != null)
        {
            var kept = new List<object?>();
            foreach (var item in items)
            {
                var probe = new Scope(scope);
                Assign(f.Target, item, probe, f.At);
                if (Py.Truthy(Eval(f.Filter, probe))) kept.Add(item);
            }
            items = kept;
        }
        else items = [.. items]; // the body may rebind the source; iterate a snapshot as Python does
        for (int i = 0; i < items.Count; i++)
        {
            if (++_iterations > MaxIterations) throw f.At.Render($"more than {MaxIterations} loop iterations");
            var body = new Scope(scope);
            Assign(f.Target, items[i], body, f.At);
            body.Set("loop", new LoopContext(items, i));
            if (Exec(f.Body, body, output) == Flow.Break) break;
        }
        if (items.Count == 0 && f.Else != null) return Exec(f.Else, scope, output);
        return Flow.Normal;
    }

    private void Assign(Expr target, object? value, Scope scope, SourcePos at)
    {
        switch (target)
        {
            case Expr.Var n:
                scope.Set(n.Id, value);
                break;
            case Expr.Attribute a:
                var ns = Eval(a.Target, scope);
                if (ns is not Namespace space)
                    throw a.At.Render($"cannot assign attribute '{a.Name}' on '{Py.TypeName(ns)}': only a namespace() can be changed");
                space.Attributes[a.Name] = value;
                break;
            case Expr.TupleLiteral t:
                var items = Py.Iterate(value) ?? throw at.Render($"cannot unpack '{Py.TypeName(value)}'");
                if (items.Count != t.Items.Count)
                    throw at.Render($"cannot unpack {items.Count} values into {t.Items.Count} names");
                for (int i = 0; i < items.Count; i++) Assign(t.Items[i], items[i], scope, at);
                break;
            default:
                throw at.Syntax("cannot assign to this expression");
        }
    }

    public object? Eval(Expr e, Scope scope)
    {
        switch (e)
        {
            case Expr.Literal l:
                return l.Value;
            case Expr.Var n:
                return scope.TryGet(n.Id, out var v) ? v : new Undefined($"'{n.Id}' is undefined");
            case Expr.ListLiteral list:
                return list.Items.Select(x => Eval(x, scope)).ToList();
            case Expr.TupleLiteral tuple:
                return tuple.Items.Select(x => Eval(x, scope)).ToList();
            case Expr.DictLiteral dict:
                var d = new Dict();
                foreach (var (key, value) in dict.Items)
                    d[Eval(key, scope) as string ?? throw key.At.Render("dictionary keys must be strings")] = Eval(value, scope);
                return d;
            case Expr.Attribute a:
                return Access.Attribute(Eval(a.Target, scope), a.Name, a.At);
            case Expr.Item i:
                return Access.Item(Eval(i.Target, scope), Eval(i.Key, scope), i.At);
            case Expr.Slice s:
                return Access.Slice(Eval(s.Target, scope), Opt(s.Start, scope), Opt(s.Stop, scope), Opt(s.Step, scope), s.At);
            case Expr.Call c:
                return Invoke(Eval(c.Callee, scope), Arguments(c.Args, scope, c.At), c.Callee);
            case Expr.Filter f:
                return Filters.Apply(f.Name, Eval(f.Value, scope), Arguments(f.Args, scope, f.At));
            case Expr.Is t:
                return TestPredicates.Apply(t.Name, Eval(t.Value, scope), Arguments(t.Args, scope, t.At)) != t.Negated;
            case Expr.Unary u:
                return Unary(u, Eval(u.Operand, scope));
            case Expr.Binary { Op: "and" } and:
                var left = Eval(and.Left, scope);
                return Py.Truthy(left) ? Eval(and.Right, scope) : left;
            case Expr.Binary { Op: "or" } or:
                var first = Eval(or.Left, scope);
                return Py.Truthy(first) ? first : Eval(or.Right, scope);
            case Expr.Binary b:
                return Operators.Binary(b.Op, Eval(b.Left, scope), Eval(b.Right, scope), b.At, maxOutputChars);
            case Expr.Conditional c:
                return Py.Truthy(Eval(c.Test, scope)) ? Eval(c.Then, scope)
                    : c.Otherwise == null ? new Undefined("the conditional expression had no else") : Eval(c.Otherwise, scope);
            default:
                throw e.At.Render($"unsupported expression {e.GetType().Name}");
        }
    }

    private object? Opt(Expr? e, Scope scope) => e == null ? null : Eval(e, scope);

    private CallArgs Arguments(Arguments args, Scope scope, SourcePos at)
    {
        var positional = args.Positional.Select(a => Eval(a, scope)).ToList();
        var keywords = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in args.Keywords)
            if (!keywords.TryAdd(name, Eval(value, scope))) throw value.At.Render($"keyword argument '{name}' repeated");
        return new CallArgs(positional, keywords, at);
    }

    private static object? Invoke(object? callee, CallArgs args, Expr calleeExpr) => callee switch
    {
        Callable f => f.Invoke(args),
        BoundMethod m => Methods.Call(m, args),
        Undefined u => throw calleeExpr.At.Render(u.Hint),
        _ => throw calleeExpr.At.Render($"'{Py.TypeName(callee)}' object is not callable"),
    };

    private static object? Unary(Expr.Unary u, object? v)
    {
        if (u.Op == "not") return !Py.Truthy(v);
        return v switch
        {
            Undefined un => throw u.At.Render(un.Hint),
            // Each arm boxed on its own: a switch over long and double arms would otherwise widen ints to double.
            long l => u.Op == "-" ? (object)(l == long.MinValue ? throw u.At.Render("integer overflow") : -l) : l,
            double d => (object)(u.Op == "-" ? -d : d),
            bool b => (object)(u.Op == "-" ? -(b ? 1L : 0L) : (b ? 1L : 0L)),
            _ => throw u.At.Render($"bad operand type for unary {u.Op}: '{Py.TypeName(v)}'"),
        };
    }
}
