using System.Net;
using System.Text;
using System.Text.Json;

namespace Kvq.Cli.Commands.Eval;

/// <summary>
/// The report folder of one `kvq eval` run:
/// results.jsonl (one JSON object per row, written as rows finish), table.md (the markdown tables), run.json (how it
/// was measured: model, fingerprint, text, settings, specs, threads, machine), *.png plots, and index.md / index.html
/// (all of it as one readable page). Extra detail files (e.g. trials.jsonl) are listed on the page too.
/// </summary>
public sealed class EvalReport
{
    public const string Results = "results.jsonl", Table = "table.md", Run = "run.json", IndexMd = "index.md", IndexHtml = "index.html";

    private readonly List<string> _markdown = [];
    private readonly List<(string File, string Caption, Action<string> Draw)> _plots = [];
    private readonly List<string> _details = [];

    public string Folder { get; }

    public EvalReport(string folder)
    {
        Folder = folder;
        try
        {
            Directory.CreateDirectory(folder);
            File.WriteAllText(Path.Combine(folder, Results), "");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"--report {folder}: cannot write there ({e.Message})");
        }
    }

    public void Markdown(string line) => _markdown.Add(line);

    public void Row(string json) => File.AppendAllText(Path.Combine(Folder, Results), json + "\n");

    public void Detail(string file, string json)
    {
        var path = Path.Combine(Folder, file);
        if (!_details.Contains(file))
        {
            _details.Add(file);
            File.WriteAllText(path, "");
        }
        File.AppendAllText(path, json + "\n");
    }

    public void Plot(string file, string caption, Action<string> draw) => _plots.Add((file, caption, draw));

    public void Write(EvalRun run)
    {
        var about = run.Describe();
        var table = new List<string>(_markdown) { "", "machine: " + about.First(a => a.Name == "machine").Value };
        File.WriteAllLines(Path.Combine(Folder, Table), table);
        var info = new Dictionary<string, string>();
        foreach (var (n, v) in about) info[n.Replace(' ', '_')] = v;
        File.WriteAllText(Path.Combine(Folder, Run), JsonSerializer.Serialize(info, RunInfoJson.Default.DictionaryStringString) + "\n");
        var plots = new List<(string File, string Caption)>();
        foreach (var (file, caption, draw) in _plots)
        {
            try
            {
                draw(Path.Combine(Folder, file));
                plots.Add((file, caption));
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Console.Error.WriteLine($"kvq: plot {file} failed: {e.Message}");
            }
        }
        File.WriteAllText(Path.Combine(Folder, IndexMd), IndexMarkdown(run, about, plots));
        File.WriteAllText(Path.Combine(Folder, IndexHtml), IndexPage(run, about, plots));
    }

    private string IndexMarkdown(EvalRun run, IReadOnlyList<(string Name, string Value)> about, List<(string File, string Caption)> plots)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# kvq eval {run.Command}").AppendLine();
        sb.AppendLine("| how it was measured | |").AppendLine("|---|---|");
        foreach (var (n, v) in about) sb.AppendLine($"| {n} | {v.Replace("|", "\\|")} |");
        sb.AppendLine().AppendLine("## Results").AppendLine();
        foreach (var l in _markdown) sb.AppendLine(l);
        if (plots.Count > 0)
        {
            sb.AppendLine().AppendLine("## Plots").AppendLine();
            foreach (var (f, c) in plots) sb.AppendLine($"![{c}]({f})").AppendLine().AppendLine($"*{c}*").AppendLine();
        }
        sb.AppendLine().AppendLine("## Files").AppendLine();
        foreach (var f in Files(plots)) sb.AppendLine($"- [{f}]({f})");
        return sb.ToString();
    }

    private IEnumerable<string> Files(List<(string File, string Caption)> plots) =>
        new[] { Table, Results, Run }.Concat(_details).Concat(plots.Select(p => p.File));

    /// <summary>The same page as HTML: markdown tables become tables, other lines paragraphs.</summary>
    private string IndexPage(EvalRun run, IReadOnlyList<(string Name, string Value)> about, List<(string File, string Caption)> plots)
    {
        static string E(string s) => WebUtility.HtmlEncode(s);
        var sb = new StringBuilder();
        sb.AppendLine("<!DOCTYPE html><html><head><meta charset=\"utf-8\">");
        sb.AppendLine($"<title>kvq eval {E(run.Command)}</title>");
        sb.AppendLine("<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}" +
                      "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}" +
                      "td.r{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}img{max-width:100%}</style></head><body>");
        sb.AppendLine($"<h1>kvq eval {E(run.Command)}</h1><table>");
        foreach (var (n, v) in about) sb.AppendLine($"<tr><th>{E(n)}</th><td>{E(v)}</td></tr>");
        sb.AppendLine("</table><h2>Results</h2>");
        AppendMarkdownAsHtml(sb, _markdown);
        if (plots.Count > 0)
        {
            sb.AppendLine("<h2>Plots</h2>");
            foreach (var (f, c) in plots) sb.AppendLine($"<figure><img src=\"{E(f)}\" alt=\"{E(c)}\"><figcaption>{E(c)}</figcaption></figure>");
        }
        sb.AppendLine("<h2>Files</h2><ul>");
        foreach (var f in Files(plots)) sb.AppendLine($"<li><a href=\"{E(f)}\">{E(f)}</a></li>");
        sb.AppendLine("</ul></body></html>");
        return sb.ToString();
    }

    private static void AppendMarkdownAsHtml(StringBuilder sb, IReadOnlyList<string> lines)
    {
        static string E(string s) => WebUtility.HtmlEncode(s);
        static string[] Cells(string line) => line.Trim().Trim('|').Split('|').Select(c => c.Trim()).ToArray();
        for (int i = 0; i < lines.Count; i++)
        {
            var line = lines[i];
            if (line.StartsWith('|') && i + 1 < lines.Count && lines[i + 1].StartsWith("|-", StringComparison.Ordinal))
            {
                var right = Cells(lines[i + 1]).Select(c => c.EndsWith(':')).ToArray();
                sb.Append("<table><tr>");
                foreach (var h in Cells(line)) sb.Append($"<th>{E(h)}</th>");
                sb.AppendLine("</tr>");
                i += 2;
                for (; i < lines.Count && lines[i].StartsWith('|'); i++)
                {
                    var cells = Cells(lines[i]);
                    sb.Append("<tr>");
                    for (int c = 0; c < cells.Length; c++)
                        sb.Append(c < right.Length && right[c] ? $"<td class=\"r\">{E(cells[c])}</td>" : $"<td>{E(cells[c])}</td>");
                    sb.AppendLine("</tr>");
                }
                sb.AppendLine("</table>");
                i--;
            }
            else if (line.StartsWith("### ", StringComparison.Ordinal)) sb.AppendLine($"<h3>{E(line[4..])}</h3>");
            else if (line.Length > 0) sb.AppendLine($"<p>{E(line)}</p>");
        }
    }
}
