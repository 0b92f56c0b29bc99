using System.Text;
using System.Text.RegularExpressions;
using Kvq.Model;

namespace Kvq.Tests.Architecture;

/// <summary>
/// The library's layering (docs/architecture.md, "Layers and what each may use"): each top-level folder of src/Kvq is
/// one layer (namespace Kvq.Folder and below), and a layer may name only the layers listed for it here. The check reads
/// the source files: using directives (plain, static, alias, global), fully qualified names (Kvq.Layer.X) and, inside
/// Kvq's namespaces, partly qualified ones (Layer.Type, where Type is declared in Kvq.Layer), in code and in doc-comment
/// crefs (the compiler checks those too); other comments and string literals are left out. A file that names another
/// layer through a type imported by a using directive is caught by that directive (unused ones fail the build, IDE0005).
/// </summary>
public sealed partial class LayeringTests
{
    /// <summary>Layer -> the layers it may use. Lower layers first; the table itself must have no cycle.</summary>
    public static readonly IReadOnlyDictionary<string, string[]> Allowed = new Dictionary<string, string[]>
    {
        ["Kvq"] = [],                 // files directly in src/Kvq (KvqInfo): every namespace of Kvq sees them
        ["IO"] = [],
        ["Text"] = [],
        ["Sampling"] = [],
        ["Tensors"] = ["IO"],
        ["Formats"] = ["Tensors", "IO", "Text"],
        ["Tokenizers"] = ["Formats", "Tensors", "IO", "Text"],
        ["Chat"] = ["Tokenizers", "Formats", "IO", "Text"],
        ["Cache"] = ["Tensors", "Formats", "IO"],
        ["Model"] = ["Cache", "Tensors", "Formats", "Tokenizers", "Chat", "IO", "Text"],
        ["Generation"] = ["Model", "Cache", "Sampling", "Tokenizers", "Chat", "Tensors", "Text"],
        ["Calibration"] = ["Model", "Cache", "Tensors", "Formats", "Tokenizers", "IO", "Text"],
        ["Eval"] = ["Generation", "Calibration", "Model", "Cache", "Sampling", "Tokenizers", "Chat", "Tensors", "Formats", "IO", "Text"],
        ["Serving"] = ["Generation", "Model", "Cache", "Sampling", "Tokenizers", "Chat", "Tensors", "IO", "Text"],
        ["Bench"] = ["Serving", "Eval", "Generation", "Model", "Cache", "Sampling", "Tokenizers", "Chat", "Tensors", "Formats", "IO", "Text"],
    };

    [Fact]
    public void NoLayerNamesOneItMayNotUse()
    {
        var found = Violations(SourceRoot());
        Assert.True(found.Count == 0, $"{found.Count} references against the layering (docs/architecture.md):\n" + string.Join("\n", found));
    }

    [Fact]
    public void EveryFolderOfTheLibraryIsALayerAndTheTableHasNoCycle()
    {
        string root = SourceRoot();
        var folders = Directory.GetDirectories(root).Select(Path.GetFileName).Where(d => d is not ("bin" or "obj")).Order().ToList();
        var missing = folders.Where(f => !Allowed.ContainsKey(f!)).ToList();
        Assert.True(missing.Count == 0, $"src/Kvq folders without a row in {nameof(Allowed)}: {string.Join(", ", missing)}");
        foreach (var (layer, uses) in Allowed)
            foreach (var u in uses) Assert.True(Allowed.ContainsKey(u), $"{layer} may use {u}, which is no layer");

        // Depth-first search for a cycle among the allowed edges.
        var state = new Dictionary<string, int>();
        List<string>? cycle = null;
        bool Visit(string n, List<string> path)
        {
            state[n] = 1;
            path.Add(n);
            foreach (var m in Allowed[n])
            {
                if (state.GetValueOrDefault(m) == 1) { cycle = [.. path[path.IndexOf(m)..], m]; return true; }
                if (state.GetValueOrDefault(m) == 0 && Visit(m, path)) return true;
            }
            path.RemoveAt(path.Count - 1);
            state[n] = 2;
            return false;
        }
        foreach (var n in Allowed.Keys)
            if (state.GetValueOrDefault(n) == 0 && Visit(n, [])) break;
        Assert.True(cycle == null, "the allowed layering has a cycle: " + string.Join(" -> ", cycle ?? []));
    }

    [Fact]
    public void TheScanFindsEachKindOfReference()
    {
        // The scanner itself, on text that names Model from the Cache layer in each way it recognises, and in ways it must not count.
        string bad = """
            using Kvq.Model;
            using static Kvq.Model.ModelLoader;
            using M = Kvq.Model.ModelConfig;
            namespace Kvq.Cache;
            /// <summary>See <see cref="Model.ModelConfig"/>.</summary>
            class A { Kvq.Model.Transformer? t; object o = Model.ModelLoader.Load(""); }
            """;
        var refs = References(bad).Select(r => r.Layer + ":" + r.Line).ToList();
        Assert.Equal(["Model:1", "Model:2", "Model:3", "Model:5", "Model:6", "Model:6"], refs);

        string fine = """
            using Kvq.Tensors;
            namespace Kvq.Cache;
            // Kvq.Model.Transformer calls this; using Kvq.Model; is not needed.
            class B { string s = "Kvq.Model.ModelConfig"; object m = x.Model.Config; int n = Model.Count; }
            """;
        Assert.Equal(["Tensors:1"], References(fine).Select(r => r.Layer + ":" + r.Line));
    }

    private static List<string> Violations(string root)
    {
        var list = new List<string>();
        foreach (var file in Directory.EnumerateFiles(root, "*.cs", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            string rel = Path.GetRelativePath(root, file).Replace('\\', '/');
            if (rel.StartsWith("obj/", StringComparison.Ordinal) || rel.StartsWith("bin/", StringComparison.Ordinal)) continue;
            string layer = rel.Contains('/', StringComparison.Ordinal) ? rel[..rel.IndexOf('/', StringComparison.Ordinal)] : "Kvq";
            if (!Allowed.TryGetValue(layer, out var uses)) continue;   // reported by the folder test
            string text = File.ReadAllText(file);
            string expected = layer == "Kvq" ? "Kvq" : "Kvq." + layer;
            if (DeclaredNamespace(text) is { } ns && ns != expected && !ns.StartsWith(expected + ".", StringComparison.Ordinal))
                list.Add($"src/Kvq/{rel}: namespace {ns} in the folder of {expected}");
            foreach (var (used, line) in References(text))
                if (used != layer && !uses.Contains(used))
                    list.Add($"src/Kvq/{rel}:{line}: {layer} -> {used}");
        }
        return list;
    }

    /// <summary>The layers a source text names, with the line of each reference (namespace declarations aside).</summary>
    private static List<(string Layer, int Line)> References(string source)
    {
        var lines = CodeOnly(source).Split('\n');
        bool inKvq = lines.Any(l => NamespaceLine().Match(l) is { Success: true } m && m.Groups[1].Value.StartsWith("Kvq", StringComparison.Ordinal));
        var result = new List<(string, int)>();
        for (int n = 0; n < lines.Length; n++)
        {
            if (NamespaceLine().IsMatch(lines[n])) continue;
            foreach (Match m in Qualified().Matches(lines[n]))
                if (Allowed.ContainsKey(m.Groups[1].Value)) result.Add((m.Groups[1].Value, n + 1));
            if (!inKvq) continue;
            foreach (Match m in PartlyQualified().Matches(lines[n]))
            {
                string layer = m.Groups[1].Value;
                if (layer != "Kvq" && Allowed.ContainsKey(layer) && Members.Value.Contains(layer + "." + m.Groups[2].Value))
                    result.Add((layer, n + 1));
            }
        }
        return result;
    }

    /// <summary>The namespace a source text declares, or null.</summary>
    private static string? DeclaredNamespace(string source) =>
        CodeOnly(source).Split('\n').Select(l => NamespaceLine().Match(l)).FirstOrDefault(m => m.Success)?.Groups[1].Value;

    /// <summary>"Layer.Name" for every type and child namespace declared directly in Kvq.Layer.</summary>
    private static readonly Lazy<HashSet<string>> Members = new(() =>
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in typeof(ModelConfig).Assembly.GetTypes())
        {
            if (t.Namespace is not { } ns || !ns.StartsWith("Kvq.", StringComparison.Ordinal)) continue;
            var parts = ns.Split('.');
            set.Add(parts.Length > 2 ? parts[1] + "." + parts[2] : parts[1] + "." + (t.IsNested ? t.DeclaringType!.Name : t.Name.Split('`')[0]));
        }
        return set;
    });

    /// <summary>The text with comments and string/char literals blanked (newlines kept), except doc-comment crefs.</summary>
    private static string CodeOnly(string s)
    {
        var sb = new StringBuilder(s.Length);
        int i = 0;
        while (i < s.Length)
        {
            if (s[i] == '/' && i + 1 < s.Length && s[i + 1] == '/')
            {
                int end = s.IndexOf('\n', i);
                if (end < 0) end = s.Length;
                string comment = s[i..end];
                sb.Append(' ');
                if (comment.StartsWith("///", StringComparison.Ordinal))
                    foreach (Match m in Cref().Matches(comment)) sb.Append(' ').Append(m.Groups[1].Value).Append(' ');
                i = end;
            }
            else if (s[i] == '/' && i + 1 < s.Length && s[i + 1] == '*')
            {
                int end = s.IndexOf("*/", i + 2, StringComparison.Ordinal);
                end = end < 0 ? s.Length : end + 2;
                foreach (char c in s.AsSpan(i, end - i)) sb.Append(c == '\n' ? '\n' : ' ');
                i = end;
            }
            else if (s[i] == '"' || s[i] == '\'')
            {
                // A literal: raw ("""), verbatim (@"), or regular; blanked up to its end.
                int end;
                if (s[i] == '"' && s.AsSpan(i).StartsWith("\"\"\""))
                {
                    int q = i;
                    while (q < s.Length && s[q] == '"') q++;
                    string fence = new('"', q - i);
                    end = s.IndexOf(fence, q, StringComparison.Ordinal);
                    end = end < 0 ? s.Length : end + fence.Length;
                }
                else if (s[i] == '"' && i > 0 && (s[i - 1] == '@' || (s[i - 1] == '$' && i > 1 && s[i - 2] == '@')))
                {
                    end = i + 1;
                    while (end < s.Length && !(s[end] == '"' && (end + 1 >= s.Length || s[end + 1] != '"'))) end += s[end] == '"' ? 2 : 1;
                    end = Math.Min(end + 1, s.Length);
                }
                else
                {
                    char q = s[i];
                    end = i + 1;
                    while (end < s.Length && s[end] != q && s[end] != '\n') end += s[end] == '\\' ? 2 : 1;
                    end = Math.Min(end + 1, s.Length);
                }
                foreach (char c in s.AsSpan(i, end - i)) sb.Append(c == '\n' ? '\n' : ' ');
                i = end;
            }
            else sb.Append(s[i++]);
        }
        return sb.ToString();
    }

    private static string SourceRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Kvq.slnx"))) return Path.Combine(dir.FullName, "src", "Kvq");
        throw new DirectoryNotFoundException("the repository (Kvq.slnx) was not found above " + AppContext.BaseDirectory);
    }

    [GeneratedRegex(@"(?<![\w.])(?:global::)?Kvq\.(\w+)")]
    private static partial Regex Qualified();

    [GeneratedRegex(@"(?<![\w.])(\w+)\.(\w+)")]
    private static partial Regex PartlyQualified();

    [GeneratedRegex(@"^\s*namespace\s+([\w.]+)")]
    private static partial Regex NamespaceLine();

    [GeneratedRegex("cref=\"([^\"]*)\"")]
    private static partial Regex Cref();
}
