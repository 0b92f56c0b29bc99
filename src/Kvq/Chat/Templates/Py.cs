using System.Globalization;
using System.Text;
using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>
/// Python's meaning of the template values: truth, str(), repr(), ==, ordering, len() and iteration. Values are
/// null (None), bool, long (int), double (float), string, List&lt;object?&gt; (list and tuple), Dict (an ordered
/// str-keyed dict), <see cref="Namespace"/>, <see cref="LoopContext"/>, <see cref="Callable"/>,
/// <see cref="BoundMethod"/> and <see cref="Undefined"/>.
/// </summary>
internal static class Py
{
    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> l => l.Count > 0,
        Dict d => d.Count > 0,
        _ => true,
    };

    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        Dict => "dict",
        Namespace => "Namespace",
        LoopContext => "LoopContext",
        Undefined => "Undefined",
        Callable or BoundMethod => "function",
        _ => v.GetType().Name,
    };

    /// <summary>str(v); Undefined renders as "".</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(v),
    };

    public static string Repr(object? v)
    {
        var sb = new StringBuilder();
        Repr(v, sb);
        return sb.ToString();
    }

    private static void Repr(object? v, StringBuilder sb)
    {
        switch (v)
        {
            case null: sb.Append("None"); break;
            case bool b: sb.Append(b ? "True" : "False"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d: sb.Append(FloatRepr(d)); break;
            case string s: StringRepr(s, sb); break;
            case Undefined: sb.Append("Undefined"); break;
            case List<object?> list:
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(", ");
                    Repr(list[i], sb);
                }
                sb.Append(']');
                break;
            case Dict dict:
                sb.Append('{');
                int n = 0;
                foreach (var (key, value) in dict)
                {
                    if (n++ > 0) sb.Append(", ");
                    StringRepr(key, sb);
                    sb.Append(": ");
                    Repr(value, sb);
                }
                sb.Append('}');
                break;
            case Namespace ns:
                sb.Append("<Namespace {");
                int k = 0;
                foreach (var (key, value) in ns.Attributes)
                {
                    if (k++ > 0) sb.Append(", ");
                    StringRepr(key, sb);
                    sb.Append(": ");
                    Repr(value, sb);
                }
                sb.Append("}>");
                break;
            case Callable c: sb.Append("<function ").Append(c.Name).Append('>'); break;
            case BoundMethod m: sb.Append("<built-in method ").Append(m.Name).Append('>'); break;
            default: sb.Append('<').Append(TypeName(v)).Append('>'); break;
        }
    }

    /// <summary>Python's repr of a str: single quotes unless the text has ' and no ", escapes for control characters.</summary>
    private static void StringRepr(string s, StringBuilder sb)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        sb.Append(quote);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == quote) sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7f) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append(quote);
    }

    /// <summary>
    /// Python's repr of a float: the shortest digits that round-trip, positional notation for decimal exponents
    /// -4 &lt; e &lt;= 16 and "1.5e-05" style otherwise, with ".0" on integral values.
    /// </summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsPositiveInfinity(d)) return "inf";
        if (double.IsNegativeInfinity(d)) return "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        string r = Math.Abs(d).ToString("R", CultureInfo.InvariantCulture);
        int exp = 0;
        int e = r.IndexOfAny(['E', 'e']);
        if (e >= 0)
        {
            exp = int.Parse(r.AsSpan(e + 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            r = r[..e];
        }
        int dot = r.IndexOf('.');
        string digits = dot < 0 ? r : r.Remove(dot, 1);
        int point = (dot < 0 ? r.Length : dot) + exp; // digits[0] sits at 10^(point-1)
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0') lead++;
        digits = digits[lead..];
        point -= lead;
        digits = digits.TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        var sb = new StringBuilder();
        if (d < 0) sb.Append('-');
        if (point > -4 && point <= 16)
        {
            if (point <= 0) sb.Append("0.").Append('0', -point).Append(digits);
            else if (point >= digits.Length) sb.Append(digits).Append('0', point - digits.Length).Append(".0");
            else sb.Append(digits, 0, point).Append('.').Append(digits, point, digits.Length - point);
        }
        else
        {
            sb.Append(digits[0]);
            if (digits.Length > 1) sb.Append('.').Append(digits, 1, digits.Length - 1);
            int x = point - 1;
            sb.Append('e').Append(x < 0 ? '-' : '+').Append(Math.Abs(x).ToString("00", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw new InvalidOperationException("not a number"),
    };

    /// <summary>Python ==: numbers by value (True == 1), containers element by element, Undefined equals Undefined.</summary>
    public static bool Equal(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a) == ToDouble(b) : ToLong(a) == ToLong(b);
        switch (a)
        {
            case null: return b is null;
            case string s: return b is string t && s == t;
            case Undefined: return b is Undefined;
            case List<object?> x:
                if (b is not List<object?> y || x.Count != y.Count) return false;
                for (int i = 0; i < x.Count; i++) if (!Equal(x[i], y[i])) return false;
                return true;
            case Dict dx:
                if (b is not Dict dy || dx.Count != dy.Count) return false;
                foreach (var (key, value) in dx)
                    if (!dy.TryGetValue(key, out var other) || !Equal(value, other)) return false;
                return true;
            default: return ReferenceEquals(a, b) || Equals(a, b);
        }
    }

    private static long ToLong(object? v) => v switch { long l => l, bool b => b ? 1 : 0, _ => 0 };

    /// <summary>Python ordering: numbers, strings (by code unit), lists element by element; null when the two cannot be
    /// ordered (the caller reports the types).</summary>
    public static int? Compare(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a).CompareTo(ToDouble(b)) : ToLong(a).CompareTo(ToLong(b));
        if (a is string s && b is string t) return Math.Sign(string.CompareOrdinal(s, t));
        if (a is List<object?> x && b is List<object?> y)
        {
            for (int i = 0; i < Math.Min(x.Count, y.Count); i++)
            {
                if (Equal(x[i], y[i])) continue;
                return Compare(x[i], y[i]);
            }
            return x.Count.CompareTo(y.Count);
        }
        return null;
    }

    /// <summary>len(v), or null when v has no length. Strings count code points, as Python does.</summary>
    public static long? Length(object? v) => v switch
    {
        string s => s.EnumerateRunes().Count(),
        List<object?> l => l.Count,
        Dict d => d.Count,
        Undefined => 0,
        _ => null,
    };

    /// <summary>The items a for loop (or list()) sees: list items, dict keys, string characters; null when v is not
    /// iterable.</summary>
    public static List<object?>? Iterate(object? v) => v switch
    {
        List<object?> l => l,
        Dict d => [.. d.Keys],
        string s => s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList(),
        Undefined => [],
        _ => null,
    };

    /// <summary>Python's str.strip family: whitespace when <paramref name="chars"/> is null, else those characters.</summary>
    public static string Strip(string s, string? chars, bool left, bool right)
    {
        int start = 0, end = s.Length;
        bool Strippable(char c) => chars == null ? char.IsWhiteSpace(c) : chars.Contains(c);
        if (left) while (start < end && Strippable(s[start])) start++;
        if (right) while (end > start && Strippable(s[end - 1])) end--;
        return s[start..end];
    }
}
