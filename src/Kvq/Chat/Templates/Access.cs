using System.Text;
using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>Jinja's obj.attr, obj[key] and obj[a:b:c] on template values. Missing keys, attributes and indexes give
/// <see cref="Undefined"/>, as in Jinja; looking into an Undefined is an error.</summary>
internal static class Access
{
    private static readonly HashSet<string> DictMethods = ["items", "keys", "values", "get"];
    private static readonly HashSet<string> StringMethods =
    [
        "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines", "startswith", "endswith", "upper", "lower", "title",
        "capitalize", "replace", "find", "rfind", "count", "join", "isdigit", "isalpha", "isalnum", "isspace", "isupper",
        "islower", "removeprefix", "removesuffix",
    ];

    /// <summary>obj.name: Python attributes (methods) first, then items, as Jinja's getattr does.</summary>
    public static object? Attribute(object? obj, string name, SourcePos at) => obj switch
    {
        Undefined u => throw at.Render(u.Hint),
        Dict d when DictMethods.Contains(name) => new BoundMethod(d, name),
        Dict d => d.TryGetValue(name, out var v) ? v : new Undefined($"'dict object' has no attribute '{name}'"),
        string s when StringMethods.Contains(name) => new BoundMethod(s, name),
        Namespace ns => ns.Attributes.TryGetValue(name, out var v) ? v : new Undefined($"'Namespace' has no attribute '{name}'"),
        LoopContext loop => loop.Attribute(name),
        _ => new Undefined($"'{Py.TypeName(obj)} object' has no attribute '{name}'"),
    };

    /// <summary>obj[key]: items first, then attributes, as Jinja's getitem does.</summary>
    public static object? Item(object? obj, object? key, SourcePos at)
    {
        switch (obj)
        {
            case Undefined u:
                throw at.Render(u.Hint);
            case Dict d when key is string k:
                if (d.TryGetValue(k, out var v)) return v;
                return DictMethods.Contains(k) ? new BoundMethod(d, k) : new Undefined($"'dict object' has no attribute '{k}'");
            case List<object?> list when key is long or bool:
                long i = key is bool b ? (b ? 1 : 0) : (long)key;
                if (i < 0) i += list.Count;
                return i >= 0 && i < list.Count ? list[(int)i] : new Undefined($"list index {key} out of range");
            case string s when key is long index:
                var runes = Runes(s);
                if (index < 0) index += runes.Count;
                return index >= 0 && index < runes.Count ? runes[(int)index] : new Undefined($"string index {key} out of range");
            case string or Namespace or LoopContext when key is string name:
                return Attribute(obj, name, at);
            default:
                return new Undefined($"'{Py.TypeName(obj)} object' has no item {Py.Repr(key)}");
        }
    }

    public static object? Slice(object? obj, object? start, object? stop, object? step, SourcePos at)
    {
        long? Index(object? v, string what) => v switch
        {
            null or Undefined => null,
            long l => l,
            bool b => b ? 1 : 0,
            _ => throw at.Render($"slice {what} must be an integer or none, not '{Py.TypeName(v)}'"),
        };
        long stepValue = Index(step, "step") ?? 1;
        if (stepValue == 0) throw at.Render("slice step cannot be zero");
        switch (obj)
        {
            case Undefined u:
                throw at.Render(u.Hint);
            case List<object?> list:
                return Pick(list, Index(start, "start"), Index(stop, "stop"), stepValue);
            case string s:
                var sb = new StringBuilder();
                foreach (var r in Pick(Runes(s), Index(start, "start"), Index(stop, "stop"), stepValue)) sb.Append((string)r!);
                return sb.ToString();
            default:
                throw at.Render($"'{Py.TypeName(obj)}' object cannot be sliced");
        }
    }

    /// <summary>Python's slice.indices: negative bounds count from the end, bounds are clamped, a negative step walks
    /// backwards from the end.</summary>
    private static List<object?> Pick(List<object?> items, long? start, long? stop, long step)
    {
        long n = items.Count;
        long Clamp(long v, long lo, long hi) => v < 0 ? Math.Max(v + n, lo) : Math.Min(v, hi);
        long first, last;
        if (step > 0)
        {
            first = start is long a ? Clamp(a, 0, n) : 0;
            last = stop is long b ? Clamp(b, 0, n) : n;
        }
        else
        {
            first = start is long a ? Clamp(a, -1, n - 1) : n - 1;
            last = stop is long b ? Clamp(b, -1, n - 1) : -1;
        }
        var picked = new List<object?>();
        for (long i = first; step > 0 ? i < last : i > last; i += step) picked.Add(items[(int)i]);
        return picked;
    }

    /// <summary>A string's code points, each as a string (Python indexes strings by code point).</summary>
    public static List<object?> Runes(string s)
    {
        var list = new List<object?>(s.Length);
        foreach (var r in s.EnumerateRunes()) list.Add(r.ToString());
        return list;
    }
}
