using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>Jinja's tests ("x is defined", "x is string", "n is divisibleby 3", ...) with Python's type rules.</summary>
internal static class TestPredicates
{
    public static bool Apply(string name, object? v, CallArgs args)
    {
        object? Arg() => args.Required(0, "value", name);
        switch (name)
        {
            case "defined": return v is not Undefined;
            case "undefined": return v is Undefined;
            case "none": return v is null;
            case "boolean": return v is bool;
            case "true": return v is true;
            case "false": return v is false;
            case "string": return v is string;
            case "number": return v is long or double or bool; // Python: bool is a Number
            case "integer": return v is long;
            case "float": return v is double;
            case "mapping": return v is Dict;
            case "iterable": return v is string or List<object?> or Dict or Undefined;
            case "sequence": return v is string or List<object?> or Dict or Undefined;
            case "callable": return v is Callable or BoundMethod;
            case "lower": return v is string s && s.ToLowerInvariant() == s;
            case "upper": return v is string t && t.ToUpperInvariant() == t;
            case "odd": return Integer(v, name, args) % 2 != 0;
            case "even": return Integer(v, name, args) % 2 == 0;
            case "divisibleby":
                long d = Integer(Arg(), name, args);
                return d != 0 ? Integer(v, name, args) % d == 0 : throw args.At.Render("divisibleby 0");
            case "eq" or "equalto" or "==": return Py.Equal(v, Arg());
            case "ne" or "!=": return !Py.Equal(v, Arg());
            case "lt" or "lessthan" or "<": return Order(v, Arg(), name, args) < 0;
            case "le" or "<=": return Order(v, Arg(), name, args) <= 0;
            case "gt" or "greaterthan" or ">": return Order(v, Arg(), name, args) > 0;
            case "ge" or ">=": return Order(v, Arg(), name, args) >= 0;
            case "in": return Operators.Contains(Arg(), v, args.At);
            case "sameas": return Arg() is var other && (v is null && other is null || v is bool a && other is bool b && a == b || ReferenceEquals(v, other));
            default: throw args.At.Render($"unknown test '{name}'");
        }
    }

    private static long Integer(object? v, string test, CallArgs args) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        _ => throw args.At.Render($"test '{test}' needs an integer, not '{Py.TypeName(v)}'"),
    };

    private static int Order(object? a, object? b, string test, CallArgs args) =>
        Py.Compare(a, b) ?? throw args.At.Render($"test '{test}': '{Py.TypeName(a)}' and '{Py.TypeName(b)}' cannot be compared");
}
