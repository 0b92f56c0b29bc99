using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>Jinja's built-in filters that chat templates use, with Jinja's (Python's) semantics; tojson is
/// transformers' version (see <see cref="JsonFormatter"/>).</summary>
internal static partial class Filters
{
    public static object? Apply(string name, object? v, CallArgs args)
    {
        var at = args.At;
        switch (name)
        {
            case "safe":
                args.Check(name);
                return v;
            case "string":
                args.Check(name);
                return Py.Str(v);
            case "e" or "escape":
                args.Check(name);
                return Escape(Py.Str(v));
            case "trim":
                args.Check(name, "chars");
                return Py.Strip(Py.Str(v), args.Get(0, "chars") as string, true, true);
            case "upper": args.Check(name); return Py.Str(v).ToUpperInvariant();
            case "lower": args.Check(name); return Py.Str(v).ToLowerInvariant();
            case "capitalize": args.Check(name); return Methods.Capitalize(Py.Str(v));
            case "title": args.Check(name); return Title(Py.Str(v));
            case "length" or "count":
                args.Check(name);
                return Py.Length(v) ?? throw at.Render($"object of type '{Py.TypeName(v)}' has no len()");
            case "wordcount":
                args.Check(name);
                return (long)Py.Str(v).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;
            case "first":
                args.Check(name);
                return Items(v, name, at) is { Count: > 0 } f ? f[0] : new Undefined("no first item, sequence was empty");
            case "last":
                args.Check(name);
                return Items(v, name, at) is { Count: > 0 } all ? all[^1] : new Undefined("no last item, sequence was empty");
            case "list":
                args.Check(name);
                return new List<object?>(Items(v, name, at));
            case "reverse":
                args.Check(name);
                if (v is string rs) return string.Concat(Access.Runes(rs).AsEnumerable().Reverse());
                var reversed = new List<object?>(Items(v, name, at));
                reversed.Reverse();
                return reversed;
            case "join":
                args.Check(name, "d", "attribute");
                var parts = Items(v, name, at);
                if (args.Get(1, "attribute") is { } joinAttr) parts = parts.Select(p => Attr(p, joinAttr, at)).ToList();
                return string.Join(Py.Str(args.Get(0, "d", "")), parts.Select(Py.Str));
            case "default" or "d":
                args.Check(name, "default_value", "boolean");
                bool boolean = Py.Truthy(args.Get(1, "boolean", false));
                return v is Undefined || boolean && !Py.Truthy(v) ? args.Get(0, "default_value", "") : v;
            case "replace":
                args.Check(name, "old", "new", "count");
                long count = args.Get(2, "count") is long c ? c : -1;
                return Methods.Replace(Py.Str(v), Py.Str(args.Required(0, "old", name)), Py.Str(args.Required(1, "new", name)), count);
            case "int":
                args.Check(name, "default", "base");
                return ToInt(v, args.Get(0, "default", 0L));
            case "float":
                args.Check(name, "default");
                return ToFloat(v, args.Get(0, "default", 0.0));
            case "abs":
                args.Check(name);
                return v switch
                {
                    long l => (object)(l == long.MinValue ? throw at.Render("integer overflow in abs") : Math.Abs(l)),
                    double d => (object)Math.Abs(d),
                    bool b => (object)(b ? 1L : 0L),
                    _ => throw at.Render($"bad operand type for abs(): '{Py.TypeName(v)}'"),
                };
            case "round":
                args.Check(name, "precision", "method");
                return Round(v, args, at);
            case "tojson":
                args.Check(name, "indent", "separators", "sort_keys", "ensure_ascii");
                return ToJson(v, args, at);
            case "items":
                args.Check(name);
                return v switch
                {
                    Undefined => new List<object?>(),
                    Dict d => d.Select(e => (object?)new List<object?> { e.Key, e.Value }).ToList(),
                    _ => throw at.Render($"items filter needs a mapping, not '{Py.TypeName(v)}'"),
                };
            case "dictsort":
                args.Check(name, "case_sensitive", "by", "reverse");
                return DictSort(v, args, at);
            case "indent":
                args.Check(name, "width", "first", "blank");
                return Indent(Py.Str(v), args.Get(0, "width", 4L), Py.Truthy(args.Get(1, "first", false)), Py.Truthy(args.Get(2, "blank", false)), at);
            case "map":
                return Map(v, args);
            case "select" or "reject":
                return Select(v, args, name == "select", attribute: false);
            case "selectattr" or "rejectattr":
                return Select(v, args, name == "selectattr", attribute: true);
            case "unique":
                args.Check(name, "case_sensitive", "attribute");
                return Unique(v, args, at);
            case "sort":
                args.Check(name, "reverse", "case_sensitive", "attribute");
                return Sort(v, args, at);
            case "min" or "max":
                args.Check(name, "case_sensitive", "attribute");
                var sorted = Sort(v, new CallArgs([], new(StringComparer.Ordinal) { ["case_sensitive"] = args.Get(0, "case_sensitive", false), ["attribute"] = args.Get(1, "attribute") }, at), at);
                return sorted.Count == 0 ? new Undefined($"no {name} item, sequence was empty") : name == "min" ? sorted[0] : sorted[^1];
            case "sum":
                args.Check(name, "attribute", "start");
                object? total = args.Get(1, "start", 0L);
                foreach (var item in Items(v, name, at))
                    total = Operators.Binary("+", total, args.Get(0, "attribute") is { } sa ? Attr(item, sa, at) : item, at, int.MaxValue);
                return total;
            case "attr":
                args.Check(name, "name");
                return Access.Attribute(v, Py.Str(args.Required(0, "name", name)), at);
            default:
                throw at.Render($"unknown filter '{name}'");
        }
    }

    private static List<object?> Items(object? v, string filter, SourcePos at) =>
        Py.Iterate(v) ?? throw at.Render($"filter '{filter}' needs a sequence, not '{Py.TypeName(v)}'");

    /// <summary>Jinja's attribute getter: "a.b.0" follows items and attributes, numeric parts as indexes.</summary>
    public static object? Attr(object? item, object? path, SourcePos at)
    {
        if (path is long index) return Access.Item(item, index, at);
        foreach (var part in Py.Str(path).Split('.'))
        {
            if (item is Undefined) return item;
            item = long.TryParse(part, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long i)
                ? Access.Item(item, i, at) : Access.Item(item, part, at);
        }
        return item;
    }

    /// <summary>markupsafe.escape: &amp; &lt; &gt; " ' as entities.</summary>
    private static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;")
        .Replace("\"", "&#34;").Replace("'", "&#39;");

    [GeneratedRegex(@"([-\s\(\{\[\<]+)")]
    private static partial Regex WordBeginning();

    /// <summary>Jinja's title filter (not str.title): words begin after spaces, '-' and opening brackets.</summary>
    private static string Title(string s)
    {
        var sb = new StringBuilder();
        foreach (var part in WordBeginning().Split(s))
            if (part.Length > 0) sb.Append(char.ToUpperInvariant(part[0])).Append(part[1..].ToLowerInvariant());
        return sb.ToString();
    }

    private static object? ToInt(object? v, object? fallback)
    {
        switch (v)
        {
            case long: return v;
            case bool b: return b ? 1L : 0L;
            case double d: return double.IsFinite(d) && Math.Abs(d) < 9.2e18 ? (long)Math.Truncate(d) : fallback;
            case string s:
                string t = s.Trim().Replace("_", "");
                if (long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l)) return l;
                return ToFloat(s, null) is double f ? ToInt(f, fallback) : fallback;
            default: return fallback;
        }
    }

    private static object? ToFloat(object? v, object? fallback) => v switch
    {
        double => v,
        long l => (double)l,
        bool b => b ? 1.0 : 0.0,
        string s when double.TryParse(s.Trim().Replace("_", ""), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => d,
        string s when s.Trim().ToLowerInvariant() is "inf" or "+inf" or "infinity" => double.PositiveInfinity,
        string s when s.Trim().ToLowerInvariant() is "-inf" or "-infinity" => double.NegativeInfinity,
        string s when s.Trim().ToLowerInvariant() == "nan" => double.NaN,
        _ => fallback,
    };

    private static object Round(object? v, CallArgs args, SourcePos at)
    {
        if (!Py.IsNumber(v)) throw at.Render($"round filter needs a number, not '{Py.TypeName(v)}'");
        long precision = args.Get(0, "precision", 0L) as long? ?? throw at.Render("round precision must be an integer");
        string method = Py.Str(args.Get(1, "method", "common"));
        double x = Py.ToDouble(v), scale = Math.Pow(10, precision);
        double r = method switch
        {
            "common" => Math.Round(x * scale, MidpointRounding.AwayFromZero) / scale,
            "ceil" => Math.Ceiling(x * scale) / scale,
            "floor" => Math.Floor(x * scale) / scale,
            _ => throw at.Render("round method must be 'common', 'ceil' or 'floor'"),
        };
        return r; // Jinja's round returns a float even for precision 0
    }

    private static string ToJson(object? v, CallArgs args, SourcePos at)
    {
        int? indent = args.Get(0, "indent") switch
        {
            null or Undefined => null,
            long n when n is >= 0 and <= 64 => (int)n,
            var other => throw at.Render($"tojson indent must be an integer from 0 to 64, not {Py.Repr(other)}"),
        };
        string? items = null, keys = null;
        if (args.Get(1, "separators") is List<object?> { Count: 2 } seps && seps[0] is string a && seps[1] is string b) (items, keys) = (a, b);
        return JsonFormatter.Format(v, indent, items, keys, Py.Truthy(args.Get(2, "sort_keys", false)), at);
    }

    private static List<object?> DictSort(object? v, CallArgs args, SourcePos at)
    {
        if (v is not Dict d) throw at.Render($"dictsort needs a mapping, not '{Py.TypeName(v)}'");
        bool caseSensitive = Py.Truthy(args.Get(0, "case_sensitive", false));
        int by = Py.Str(args.Get(1, "by", "key")) == "value" ? 1 : 0;
        var pairs = d.Select(e => new List<object?> { e.Key, e.Value }).ToList();
        var sorted = SortBy(pairs, p => p[by], caseSensitive, at);
        if (Py.Truthy(args.Get(2, "reverse", false))) sorted.Reverse();
        return sorted.Select(p => (object?)p).ToList();
    }

    private static List<T> SortBy<T>(List<T> items, Func<T, object?> key, bool caseSensitive, SourcePos at)
    {
        object? Key(T item) => key(item) is string s && !caseSensitive ? s.ToLowerInvariant() : key(item);
        var keyed = items.Select((item, i) => (Item: item, Key: Key(item), Index: i)).ToList();
        keyed.Sort((x, y) =>
        {
            int c = Py.Compare(x.Key, y.Key) ?? throw at.Render($"cannot sort '{Py.TypeName(x.Key)}' and '{Py.TypeName(y.Key)}' together");
            return c != 0 ? c : x.Index.CompareTo(y.Index); // stable, as Python's sort
        });
        return keyed.Select(k => k.Item).ToList();
    }

    private static List<object?> Sort(object? v, CallArgs args, SourcePos at)
    {
        var attribute = args.Get(2, "attribute");
        var sorted = SortBy(new List<object?>(Items(v, "sort", at)), x => attribute == null ? x : Attr(x, attribute, at),
            Py.Truthy(args.Get(1, "case_sensitive", false)), at);
        if (Py.Truthy(args.Get(0, "reverse", false))) sorted.Reverse();
        return sorted;
    }

    private static List<object?> Unique(object? v, CallArgs args, SourcePos at)
    {
        bool caseSensitive = Py.Truthy(args.Get(0, "case_sensitive", false));
        var attribute = args.Get(1, "attribute");
        var seen = new List<object?>();
        var result = new List<object?>();
        foreach (var item in Items(v, "unique", at))
        {
            var key = attribute == null ? item : Attr(item, attribute, at);
            if (!caseSensitive && key is string s) key = s.ToLowerInvariant();
            if (seen.Any(k => Py.Equal(k, key))) continue;
            seen.Add(key);
            result.Add(item);
        }
        return result;
    }

    /// <summary>Jinja 3's indent: lines after the first are indented (blank ones only with blank=True).</summary>
    private static string Indent(string s, object? width, bool first, bool blank, SourcePos at)
    {
        string pad = width switch
        {
            string w => w,
            long n when n is >= 0 and <= 256 => new string(' ', (int)n),
            _ => throw at.Render("indent width must be a string or an integer from 0 to 256"),
        };
        var lines = Methods.SplitLines(s + "\n");
        var sb = new StringBuilder();
        if (blank) sb.AppendJoin("\n" + pad, lines);
        else
        {
            sb.Append(lines[0]);
            for (int i = 1; i < lines.Count; i++) sb.Append('\n').Append(lines[i].Length > 0 ? pad + lines[i] : "");
        }
        return first ? pad + sb : sb.ToString();
    }

    /// <summary>map(attribute='x', default=d) or map('filter', args...).</summary>
    private static List<object?> Map(object? v, CallArgs args)
    {
        var items = Items(v, "map", args.At);
        if (args.Positional.Count == 0)
        {
            args.Check("map", "attribute", "default");
            var attribute = args.Keywords.GetValueOrDefault("attribute") ?? throw args.At.Render("map() needs a filter name or attribute=");
            return items.Select(item =>
            {
                var value = Attr(item, attribute, args.At);
                return value is Undefined && args.Keywords.TryGetValue("default", out var d) ? d : value;
            }).ToList();
        }
        string filter = args.Positional[0] as string ?? throw args.At.Render("map() filter name must be a string");
        var rest = new CallArgs(args.Positional.Skip(1).ToList(), args.Keywords, args.At);
        return items.Select(item => Apply(filter, item, rest)).ToList();
    }

    /// <summary>select/reject(test, args...) and selectattr/rejectattr(attribute, test, args...); without a test
    /// the value's truth decides.</summary>
    private static List<object?> Select(object? v, CallArgs args, bool keep, bool attribute)
    {
        var items = Items(v, keep ? "select" : "reject", args.At);
        int skip = attribute ? 1 : 0;
        var attr = attribute ? args.Positional.ElementAtOrDefault(0) ?? throw args.At.Render("selectattr/rejectattr need an attribute name") : null;
        string? test = args.Positional.Count > skip ? args.Positional[skip] as string ?? throw args.At.Render("test name must be a string") : null;
        var testArgs = new CallArgs(args.Positional.Skip(skip + 1).ToList(), args.Keywords, args.At);
        return items.Where(item =>
        {
            var value = attribute ? Attr(item, attr, args.At) : item;
            bool pass = test == null ? Py.Truthy(value) : TestPredicates.Apply(test, value, testArgs);
            return pass == keep;
        }).ToList();
    }
}
