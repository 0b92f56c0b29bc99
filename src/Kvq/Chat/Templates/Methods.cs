using System.Text;
using Dict = System.Collections.Generic.OrderedDictionary<string, object?>;

namespace Kvq.Chat.Templates;

/// <summary>Calls of Python str and dict methods (and loop.cycle) with Python's semantics; no other methods exist,
/// so a template cannot reach anything but its own values.</summary>
internal static class Methods
{
    public static object? Call(BoundMethod m, CallArgs args) => m.Receiver switch
    {
        string s => StringMethod(s, m.Name, args),
        Dict d => DictMethod(d, m.Name, args),
        LoopContext loop when m.Name == "cycle" => loop.Cycle(args.Positional),
        _ => throw args.At.Render($"'{Py.TypeName(m.Receiver)}' has no method '{m.Name}'"),
    };

    private static object? DictMethod(Dict d, string name, CallArgs args)
    {
        switch (name)
        {
            case "items":
                args.Check("items");
                return d.Select(e => (object?)new List<object?> { e.Key, e.Value }).ToList();
            case "keys":
                args.Check("keys");
                return d.Keys.Select(k => (object?)k).ToList();
            case "values":
                args.Check("values");
                return d.Values.ToList();
            case "get":
                args.Check("get", "key", "default");
                var key = args.Required(0, "key", "get");
                return key is string k && d.TryGetValue(k, out var v) ? v : args.Get(1, "default");
            default:
                throw args.At.Render($"'dict' has no method '{name}'");
        }
    }

    private static string? OptionalString(CallArgs args, int index, string name, string method) => args.Get(index, name) switch
    {
        null or Undefined => null,
        string s => s,
        var v => throw args.At.Render($"{method}() argument must be a string or none, not '{Py.TypeName(v)}'"),
    };

    private static string RequiredString(CallArgs args, int index, string name, string method) =>
        args.Required(index, name, method) as string ?? throw args.At.Render($"{method}() argument '{name}' must be a string");

    private static object? StringMethod(string s, string name, CallArgs args)
    {
        switch (name)
        {
            case "strip": return Py.Strip(s, OptionalString(args.Check(name, "chars"), 0, "chars", name), true, true);
            case "lstrip": return Py.Strip(s, OptionalString(args.Check(name, "chars"), 0, "chars", name), true, false);
            case "rstrip": return Py.Strip(s, OptionalString(args.Check(name, "chars"), 0, "chars", name), false, true);
            case "upper": args.Check(name); return s.ToUpperInvariant();
            case "lower": args.Check(name); return s.ToLowerInvariant();
            case "title": args.Check(name); return Title(s);
            case "capitalize": args.Check(name); return Capitalize(s);
            case "startswith" or "endswith":
                args.Check(name, "prefix");
                var affix = args.Required(0, "prefix", name);
                var options = affix switch
                {
                    string one => [one],
                    List<object?> many when many.All(x => x is string) => many.Cast<string>().ToList(),
                    _ => throw args.At.Render($"{name}() argument must be a string or a tuple of strings, not '{Py.TypeName(affix)}'"),
                };
                return options.Any(o => name == "startswith" ? s.StartsWith(o, StringComparison.Ordinal) : s.EndsWith(o, StringComparison.Ordinal));
            case "split" or "rsplit":
                args.Check(name, "sep", "maxsplit");
                var sep = OptionalString(args, 0, "sep", name);
                long max = args.Get(1, "maxsplit", -1L) as long? ?? throw args.At.Render($"{name}() maxsplit must be an integer");
                if (sep == "") throw args.At.Render("empty separator");
                return Split(s, sep, max, fromRight: name == "rsplit");
            case "splitlines":
                args.Check(name);
                return SplitLines(s).Select(l => (object?)l).ToList();
            case "replace":
                args.Check(name, "old", "new", "count");
                string old = RequiredString(args, 0, "old", name), replacement = RequiredString(args, 1, "new", name);
                long count = args.Get(2, "count", -1L) as long? ?? throw args.At.Render("replace() count must be an integer");
                return Replace(s, old, replacement, count);
            case "find" or "rfind":
                args.Check(name, "sub");
                string sub = RequiredString(args, 0, "sub", name);
                return (long)(name == "find" ? s.IndexOf(sub, StringComparison.Ordinal) : s.LastIndexOf(sub, StringComparison.Ordinal));
            case "count":
                args.Check(name, "sub");
                return CountOf(s, RequiredString(args, 0, "sub", name));
            case "join":
                args.Check(name, "iterable");
                var items = Py.Iterate(args.Required(0, "iterable", name)) ?? throw args.At.Render("join() argument must be iterable");
                return string.Join(s, items.Select(i => i as string ?? throw args.At.Render($"join() expected str items, found '{Py.TypeName(i)}'")));
            case "removeprefix":
                args.Check(name, "prefix");
                string prefix = RequiredString(args, 0, "prefix", name);
                return s.StartsWith(prefix, StringComparison.Ordinal) ? s[prefix.Length..] : s;
            case "removesuffix":
                args.Check(name, "suffix");
                string suffix = RequiredString(args, 0, "suffix", name);
                return suffix.Length > 0 && s.EndsWith(suffix, StringComparison.Ordinal) ? s[..^suffix.Length] : s;
            case "isdigit": args.Check(name); return s.Length > 0 && s.All(char.IsDigit);
            case "isalpha": args.Check(name); return s.Length > 0 && s.All(char.IsLetter);
            case "isalnum": args.Check(name); return s.Length > 0 && s.All(char.IsLetterOrDigit);
            case "isspace": args.Check(name); return s.Length > 0 && s.All(char.IsWhiteSpace);
            case "isupper": args.Check(name); return s.Any(char.IsLetter) && s.ToUpperInvariant() == s;
            case "islower": args.Check(name); return s.Any(char.IsLetter) && s.ToLowerInvariant() == s;
            default: throw args.At.Render($"'str' has no method '{name}'");
        }
    }

    /// <summary>Python str.title: the first cased character after an uncased one goes upper case, the rest lower.</summary>
    public static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool previousCased = false;
        foreach (char c in s)
        {
            bool cased = char.IsLetter(c);
            sb.Append(cased ? (previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c)) : c);
            previousCased = cased;
        }
        return sb.ToString();
    }

    public static string Capitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    public static string Replace(string s, string old, string replacement, long count)
    {
        if (count < 0) return old.Length == 0 ? InsertEverywhere(s, replacement, long.MaxValue) : s.Replace(old, replacement, StringComparison.Ordinal);
        if (old.Length == 0) return InsertEverywhere(s, replacement, count);
        var sb = new StringBuilder();
        int from = 0;
        for (long done = 0; done < count; done++)
        {
            int at = s.IndexOf(old, from, StringComparison.Ordinal);
            if (at < 0) break;
            sb.Append(s, from, at - from).Append(replacement);
            from = at + old.Length;
        }
        return sb.Append(s, from, s.Length - from).ToString();
    }

    /// <summary>Python's "ab".replace("", "-") == "-a-b-".</summary>
    private static string InsertEverywhere(string s, string insert, long count)
    {
        var sb = new StringBuilder();
        long done = 0;
        foreach (var r in s.EnumerateRunes())
        {
            if (done++ < count) sb.Append(insert);
            sb.Append(r.ToString());
        }
        if (done < count) sb.Append(insert);
        return sb.ToString();
    }

    private static long CountOf(string s, string sub)
    {
        if (sub.Length == 0) return s.EnumerateRunes().Count() + 1;
        long n = 0;
        for (int at = s.IndexOf(sub, StringComparison.Ordinal); at >= 0; at = s.IndexOf(sub, at + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    /// <summary>Python str.split / str.rsplit: by runs of whitespace (dropping empty ends) when sep is null, else by sep.</summary>
    private static List<object?> Split(string s, string? sep, long max, bool fromRight)
    {
        var parts = new List<string>();
        if (sep == null)
        {
            var words = new List<(int Start, int End)>();
            for (int i = 0; i < s.Length;)
            {
                while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
                int start = i;
                while (i < s.Length && !char.IsWhiteSpace(s[i])) i++;
                if (i > start) words.Add((start, i));
            }
            if (max < 0 || words.Count <= max + 1) parts.AddRange(words.Select(w => s[w.Start..w.End]));
            else if (!fromRight)
            {
                for (int i = 0; i < max; i++) parts.Add(s[words[i].Start..words[i].End]);
                parts.Add(s[words[(int)max].Start..].TrimEnd());
            }
            else
            {
                int keep = words.Count - (int)max;
                parts.Add(s[..words[keep - 1].End].TrimStart());
                for (int i = keep; i < words.Count; i++) parts.Add(s[words[i].Start..words[i].End]);
            }
        }
        else
        {
            var all = s.Split(sep, StringSplitOptions.None);
            if (max < 0 || all.Length <= max + 1) parts.AddRange(all);
            else if (!fromRight)
            {
                parts.AddRange(all.Take((int)max));
                parts.Add(string.Join(sep, all.Skip((int)max)));
            }
            else
            {
                parts.Add(string.Join(sep, all.Take(all.Length - (int)max)));
                parts.AddRange(all.Skip(all.Length - (int)max));
            }
        }
        return parts.Select(p => (object?)p).ToList();
    }

    /// <summary>Python str.splitlines: every line boundary Python knows, boundaries dropped, no empty last line.</summary>
    public static List<string> SplitLines(string s)
    {
        var lines = new List<string>();
        int start = 0;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (c is '\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029')
            {
                lines.Add(s[start..i]);
                if (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n') i++;
                start = i + 1;
            }
        }
        if (start < s.Length) lines.Add(s[start..]);
        return lines;
    }
}
