using System.Text;
using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>Python's binary operators on template values (and/or are short-circuited by the renderer).</summary>
internal static class Operators
{
    public static object? Binary(string op, object? a, object? b, SourcePos at, int maxOutput)
    {
        switch (op)
        {
            case "==": return Py.Equal(a, b);
            case "!=": return !Py.Equal(a, b);
            case "~": return Py.Str(a) + Py.Str(b);
            case "in": return Contains(b, a, at);
            case "not in": return !Contains(b, a, at);
        }
        if (a is Undefined ua) throw at.Render(ua.Hint);
        if (b is Undefined ub) throw at.Render(ub.Hint);
        switch (op)
        {
            case "<" or ">" or "<=" or ">=":
                int c = Py.Compare(a, b) ?? throw at.Render($"'{op}' not supported between '{Py.TypeName(a)}' and '{Py.TypeName(b)}'");
                return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, _ => c >= 0 };
            case "+":
                if (a is string s && b is string t) return Checked(s.Length + (long)t.Length, maxOutput, at, () => s + t);
                if (a is List<object?> x && b is List<object?> y) return new List<object?>([.. x, .. y]);
                return Arithmetic(op, a, b, at);
            case "*":
                if (a is string rs && Py.IsNumber(b) && b is not double) return Repeat(rs, (long)Py.ToDouble(b), maxOutput, at);
                if (b is string rs2 && Py.IsNumber(a) && a is not double) return Repeat(rs2, (long)Py.ToDouble(a), maxOutput, at);
                return Arithmetic(op, a, b, at);
            default:
                return Arithmetic(op, a, b, at);
        }
    }

    private static string Checked(long length, int max, SourcePos at, Func<string> make) =>
        length > max ? throw at.Render($"a string longer than the output limit of {max} characters") : make();

    private static string Repeat(string s, long n, int max, SourcePos at)
    {
        if (n <= 0 || s.Length == 0) return "";
        if (n * s.Length > max) throw at.Render($"a string longer than the output limit of {max} characters");
        return new StringBuilder(s.Length * (int)n).Insert(0, s, (int)n).ToString();
    }

    private static object Arithmetic(string op, object? a, object? b, SourcePos at)
    {
        if (!Py.IsNumber(a) || !Py.IsNumber(b))
            throw at.Render($"unsupported operand types for {op}: '{Py.TypeName(a)}' and '{Py.TypeName(b)}'");
        if (op == "/")
        {
            double den = Py.ToDouble(b);
            return den == 0 ? throw at.Render("division by zero") : Py.ToDouble(a) / den;
        }
        if (a is double || b is double)
        {
            double x = Py.ToDouble(a), y = Py.ToDouble(b);
            return op switch
            {
                "+" => x + y,
                "-" => x - y,
                "*" => x * y,
                "//" => y == 0 ? throw at.Render("float floor division by zero") : Math.Floor(x / y),
                "%" => y == 0 ? throw at.Render("float modulo by zero") : x - y * Math.Floor(x / y),
                "**" => Math.Pow(x, y),
                _ => throw at.Render($"unknown operator '{op}'"),
            };
        }
        long p = (long)Py.ToDouble(a), q = (long)Py.ToDouble(b);
        try
        {
            return op switch
            {
                "+" => (object)checked(p + q),
                "-" => checked(p - q),
                "*" => checked(p * q),
                "//" => q == 0 ? throw at.Render("integer division by zero") : FloorDiv(p, q),
                "%" => q == 0 ? throw at.Render("integer modulo by zero") : p - q * FloorDiv(p, q),
                "**" => q < 0 ? (object)Math.Pow(p, q) : Power(p, q),
                _ => throw at.Render($"unknown operator '{op}'"),
            };
        }
        catch (OverflowException e) { throw at.Render($"integer overflow in '{op}'", e); }
    }

    private static long FloorDiv(long p, long q)
    {
        long d = p / q;
        return (p % q != 0 && (p < 0) != (q < 0)) ? d - 1 : d;
    }

    private static long Power(long b, long e)
    {
        // |b| <= 1 would loop e times without overflowing; any other base overflows within 63 steps.
        if (b is 0 or 1) return e == 0 ? 1 : b;
        if (b == -1) return e % 2 == 0 ? 1 : -1;
        long r = 1;
        for (long i = 0; i < e; i++) r = checked(r * b);
        return r;
    }

    /// <summary>Python's "needle in haystack".</summary>
    public static bool Contains(object? haystack, object? needle, SourcePos at) => haystack switch
    {
        string s => needle is string n ? s.Contains(n, StringComparison.Ordinal)
            : throw at.Render($"'in <string>' requires a string on the left, not '{Py.TypeName(needle)}'"),
        List<object?> l => l.Any(x => Py.Equal(x, needle)),
        Dict d => needle is string k && d.ContainsKey(k),
        Undefined => false,
        _ => throw at.Render($"argument of type '{Py.TypeName(haystack)}' is not a container"),
    };
}
