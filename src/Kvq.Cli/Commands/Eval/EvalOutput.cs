namespace Kvq.Cli.Commands.Eval;

/// <summary>
/// Where an eval's results go: stdout gets a markdown table (or, with --json, one JSON object per row), and the report
/// folder, when asked for, gets the same table, every row (results.jsonl, appended as each row finishes so an interrupted
/// run keeps them), plots and an index page.
/// </summary>
public sealed class EvalOutput(bool json, EvalReport? report)
{
    public bool Json => json;
    public int Rows { get; private set; }
    public string? ReportFolder => report?.Folder;

    /// <summary>A line of the human-readable output (stdout unless --json; the report's table.md).</summary>
    public void Markdown(string line)
    {
        if (!json) Console.WriteLine(line);
        report?.Markdown(line);
    }

    /// <summary>The line that says what was measured, above the table (a blank line follows it in the report so the table renders).</summary>
    public void Header(string line)
    {
        Markdown(line);
        report?.Markdown("");
    }

    public void Markdown(IEnumerable<string> lines)
    {
        foreach (var l in lines) Markdown(l);
    }

    /// <summary>A result row: JSON on stdout with --json; always a line of the report's results.jsonl.</summary>
    public void Row<T>(T row)
    {
        Rows++;
        var line = CliJson.Line(row);
        if (json) Console.WriteLine(line);
        report?.Row(line);
    }

    /// <summary>A row that also has a line in a markdown table.</summary>
    public void Row<T>(T row, MarkdownTable<T> table)
    {
        Row(row);
        Markdown(table.Line(row));
    }

    /// <summary>Extra per-item detail kept in the report only (e.g. every passkey answer), as JSON lines in <paramref name="file"/>.</summary>
    public void Detail<T>(string file, T item) => report?.Detail(file, CliJson.Line(item));

    /// <summary>A plot for the report, drawn when the report is written.</summary>
    public void Plot(string file, string caption, Action<string> draw) => report?.Plot(file, caption, draw);

    public void Finish(EvalRun run) => report?.Write(run);
}
