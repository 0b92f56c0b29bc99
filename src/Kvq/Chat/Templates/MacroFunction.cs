using System.Text;
using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>A {% macro %} (or the body of a {% call %} block, as caller()): renders its body with the arguments
/// bound, in a scope under the one it was defined in, and returns the text.</summary>
internal sealed class MacroFunction(string name, List<(string Name, Expr? Default)> parameters, List<Stmt> body,
    Scope definedIn, TemplateRenderer renderer) : Callable(name)
{
    public override object? Invoke(CallArgs args)
    {
        var scope = new Scope(definedIn);
        for (int i = 0; i < parameters.Count; i++)
        {
            var (pname, fallback) = parameters[i];
            if (i < args.Positional.Count)
            {
                if (args.Keywords.ContainsKey(pname)) throw args.At.Render($"macro '{Name}' got multiple values for argument '{pname}'");
                scope.Set(pname, args.Positional[i]);
            }
            else if (args.Keywords.TryGetValue(pname, out var v)) scope.Set(pname, v);
            else scope.Set(pname, fallback == null ? new Undefined($"parameter '{pname}' of macro '{Name}' was not given") : renderer.Eval(fallback, scope));
        }
        scope.Set("varargs", args.Positional.Skip(parameters.Count).ToList());
        var kwargs = new Dict();
        foreach (var (k, v) in args.Keywords)
            if (!parameters.Any(p => p.Name == k)) kwargs[k] = v;
        if (kwargs.Remove("caller", out var caller)) scope.Set("caller", caller);
        scope.Set("kwargs", kwargs);
        var output = new StringBuilder();
        renderer.Call(this, args.At, () => renderer.Exec(body, scope, output));
        return output.ToString();
    }
}
