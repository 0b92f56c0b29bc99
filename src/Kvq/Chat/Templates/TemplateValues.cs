using System.Collections;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>
/// Turns caller-supplied .NET values (extra variables, tools) into template values by their type alone, without
/// reflection (the library is trimmed and AOT-compiled): strings, booleans, numbers, null, JsonElement, JsonNode,
/// string-keyed dictionaries and other enumerables.
/// </summary>
internal static class TemplateValues
{
    public static object? From(object? value, int depth = 0)
    {
        if (depth > TemplateParser.MaxDepth) throw new ArgumentException("value is nested too deeply for a chat template");
        switch (value)
        {
            case null: return null;
            case string or bool or long or double: return value;
            case int i: return (long)i;
            case short s: return (long)s;
            case byte b: return (long)b;
            case uint u: return (long)u;
            case float f: return (double)f;
            case decimal m: return (double)m;
            case char c: return c.ToString();
            case JsonElement e: return FromJson(e, depth);
            case JsonNode n: return FromJson(JsonSerializer.SerializeToElement(n, JsonNodeContext.Default.JsonNode), depth);
            case IEnumerable<KeyValuePair<string, object?>> pairs:
                var dict = new Dict();
                foreach (var (k, v) in pairs) dict[k] = From(v, depth + 1);
                return dict;
            case IDictionary map:
                var d2 = new Dict();
                foreach (DictionaryEntry entry in map)
                    d2[entry.Key as string ?? throw new ArgumentException($"dictionary keys must be strings, found {entry.Key.GetType().Name}")] = From(entry.Value, depth + 1);
                return d2;
            case IEnumerable items:
                var list = new List<object?>();
                foreach (var item in items) list.Add(From(item, depth + 1));
                return list;
            default:
                throw new ArgumentException($"a {value.GetType().Name} cannot be passed to a chat template (use strings, numbers, booleans, lists, dictionaries or JSON)");
        }
    }

    private static object? FromJson(JsonElement e, int depth)
    {
        if (depth > TemplateParser.MaxDepth) throw new ArgumentException("value is nested too deeply for a chat template");
        switch (e.ValueKind)
        {
            case JsonValueKind.Null or JsonValueKind.Undefined: return null;
            case JsonValueKind.True: return true;
            case JsonValueKind.False: return false;
            case JsonValueKind.String: return e.GetString();
            case JsonValueKind.Number:
                return e.TryGetInt64(out long l) ? (object)l : e.GetDouble();
            case JsonValueKind.Array:
                var list = new List<object?>();
                foreach (var item in e.EnumerateArray()) list.Add(FromJson(item, depth + 1));
                return list;
            default:
                var dict = new Dict();
                foreach (var p in e.EnumerateObject()) dict[p.Name] = FromJson(p.Value, depth + 1);
                return dict;
        }
    }
}
