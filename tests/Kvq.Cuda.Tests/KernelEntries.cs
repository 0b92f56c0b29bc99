using System.Text;
using System.Text.RegularExpressions;

namespace Kvq.Cuda.Tests;

/// <summary>
/// The extern "C" __global__ entry points a kernel file defines, found in its text the way NVRTC would see it: the
/// file and the headers it includes (<see cref="KernelSources.Includes"/>, as KernelLoader hands them to NVRTC), with
/// the function-like macros expanded (parameters substituted, ## pasted, the result rescanned) far enough to read the
/// generated names. Written here because the test machines have no CUDA compiler: it lets a CPU test catch a kernel
/// that the host asks for and no file defines. Conditionals are not evaluated (the kernel files keep entry points
/// out of #if blocks; include guards are honoured by including each header once).
/// </summary>
internal static partial class KernelEntries
{
    public static HashSet<string> Of(string source)
    {
        var texts = KernelSources.Includes(source).Select(h => h.Text).Append(source).Select(Clean).ToList();
        var macros = new Dictionary<string, (string[] Params, string Body)>(StringComparer.Ordinal);
        var code = new StringBuilder();
        foreach (var text in texts)
            foreach (var line in text.Split('\n'))
            {
                var d = Define().Match(line);
                if (d.Success)
                    macros[d.Groups[1].Value] = (d.Groups[2].Value.Split(',').Select(p => p.Trim()).ToArray(), d.Groups[3].Value);
                else if (!line.TrimStart().StartsWith('#')) code.Append(line).Append('\n');
            }
        var expanded = Expand(code.ToString(), macros, 0);
        return Entry().Matches(expanded).Select(m => m.Groups[1].Value).ToHashSet(StringComparer.Ordinal);
    }

    // Comments out, continuation lines joined (a #define's body is one line afterwards).
    private static string Clean(string text)
    {
        text = BlockComment().Replace(text, " ");
        text = LineComment().Replace(text, "");
        return text.Replace("\\\r\n", " ").Replace("\\\n", " ");
    }

    private static string Expand(string s, Dictionary<string, (string[] Params, string Body)> macros, int depth)
    {
        if (depth > 32) throw new InvalidOperationException("macro expansion deeper than 32: a recursive macro?");
        var sb = new StringBuilder();
        int i = 0;
        while (i < s.Length)
        {
            var m = Identifier().Match(s, i);
            if (!m.Success) { sb.Append(s, i, s.Length - i); break; }
            sb.Append(s, i, m.Index - i);
            i = m.Index + m.Length;
            if (macros.TryGetValue(m.Value, out var mac))
            {
                int j = i;
                while (j < s.Length && char.IsWhiteSpace(s[j])) j++;
                if (j < s.Length && s[j] == '(')
                {
                    var (args, end) = Arguments(s, j);
                    if (args.Count != mac.Params.Length)
                        throw new InvalidOperationException($"macro {m.Value} takes {mac.Params.Length} arguments, given {args.Count}: {s[m.Index..end]}");
                    var body = Identifier().Replace(mac.Body, t => Array.IndexOf(mac.Params, t.Value) is int k and >= 0 ? args[k] : t.Value);
                    body = Paste().Replace(body, "");
                    sb.Append(' ').Append(Expand(body, macros, depth + 1)).Append(' ');
                    i = end;
                    continue;
                }
            }
            sb.Append(m.Value);
        }
        return sb.ToString();
    }

    // The arguments of the call whose '(' is at open, split at top-level commas, and the index after its ')'.
    private static (List<string> Args, int End) Arguments(string s, int open)
    {
        var args = new List<string>();
        int depth = 0, start = open + 1;
        for (int i = open; i < s.Length; i++)
        {
            char c = s[i];
            if (c == '(') depth++;
            else if (c == ')' && --depth == 0)
            {
                args.Add(s[start..i].Trim());
                return (args, i + 1);
            }
            else if (c == ',' && depth == 1)
            {
                args.Add(s[start..i].Trim());
                start = i + 1;
            }
        }
        throw new InvalidOperationException($"unclosed macro call at {s[open..Math.Min(s.Length, open + 80)]}");
    }

    [GeneratedRegex(@"^[ \t]*#[ \t]*define[ \t]+(\w+)\(([^)]*)\)(.*)$")]
    private static partial Regex Define();
    [GeneratedRegex(@"/\*.*?\*/", RegexOptions.Singleline)]
    private static partial Regex BlockComment();
    [GeneratedRegex(@"//[^\n]*")]
    private static partial Regex LineComment();
    [GeneratedRegex(@"[A-Za-z_]\w*")]
    private static partial Regex Identifier();
    [GeneratedRegex(@"\s*##\s*")]
    private static partial Regex Paste();
    [GeneratedRegex(@"extern\s+""C""\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(")]
    private static partial Regex Entry();
}
