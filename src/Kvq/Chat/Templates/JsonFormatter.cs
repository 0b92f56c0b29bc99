using System.Globalization;
using System.Text;
using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>
/// The tojson filter as transformers defines it for chat templates: Python's json.dumps(value, ensure_ascii=False,
/// indent=indent, separators=separators, sort_keys=sort_keys). Not Jinja's own tojson, which HTML-escapes &lt; &gt; &amp; '.
/// </summary>
internal static class JsonFormatter
{
    public static string Format(object? value, int? indent, string? itemSeparator, string? keySeparator, bool sortKeys, SourcePos at)
    {
        var sb = new StringBuilder();
        itemSeparator ??= indent == null ? ", " : ",";
        keySeparator ??= ": ";
        Write(value, sb, indent, itemSeparator, keySeparator, sortKeys, 0, at);
        return sb.ToString();
    }

    private static void Write(object? v, StringBuilder sb, int? indent, string items, string keys, bool sort, int depth, SourcePos at)
    {
        if (depth > TemplateParser.MaxDepth) throw at.Render("tojson: value is nested too deeply");
        switch (v)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : Py.FloatRepr(d));
                break;
            case string s: WriteString(s, sb); break;
            case List<object?> list:
                if (list.Count == 0) { sb.Append("[]"); break; }
                sb.Append('[');
                for (int i = 0; i < list.Count; i++)
                {
                    if (i > 0) sb.Append(items);
                    NewLine(sb, indent, depth + 1);
                    Write(list[i], sb, indent, items, keys, sort, depth + 1, at);
                }
                NewLine(sb, indent, depth);
                sb.Append(']');
                break;
            case Dict dict:
                if (dict.Count == 0) { sb.Append("{}"); break; }
                sb.Append('{');
                IEnumerable<KeyValuePair<string, object?>> entries = sort ? dict.OrderBy(e => e.Key, StringComparer.Ordinal) : dict;
                int n = 0;
                foreach (var (key, value) in entries)
                {
                    if (n++ > 0) sb.Append(items);
                    NewLine(sb, indent, depth + 1);
                    WriteString(key, sb);
                    sb.Append(keys);
                    Write(value, sb, indent, items, keys, sort, depth + 1, at);
                }
                NewLine(sb, indent, depth);
                sb.Append('}');
                break;
            case Undefined u: throw at.Render($"tojson: {u.Hint}");
            default: throw at.Render($"tojson: object of type '{Py.TypeName(v)}' is not JSON serializable");
        }
    }

    private static void NewLine(StringBuilder sb, int? indent, int depth)
    {
        if (indent is int n) sb.Append('\n').Append(' ', n * depth);
    }

    /// <summary>json.dumps with ensure_ascii=False: quotes, backslashes and control characters escaped, the rest kept.</summary>
    public static void WriteString(string s, StringBuilder sb)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
