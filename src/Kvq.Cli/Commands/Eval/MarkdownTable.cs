using System.Globalization;

namespace Kvq.Cli.Commands.Eval;

/// <summary>A markdown table of rows of one type: column headers, alignment and how each cell is written.</summary>
public sealed class MarkdownTable<T>
{
    private readonly List<(string Header, bool Right, Func<T, string> Cell)> _columns = [];

    public MarkdownTable<T> Left(string header, Func<T, string> cell) { _columns.Add((header, false, cell)); return this; }
    public MarkdownTable<T> Right(string header, Func<T, string> cell) { _columns.Add((header, true, cell)); return this; }

    public IEnumerable<string> HeaderLines()
    {
        yield return "| " + string.Join(" | ", _columns.Select(c => c.Header)) + " |";
        yield return "|" + string.Join("|", _columns.Select(c => c.Right ? "---:" : "---")) + "|";
    }

    public string Line(T row) => "| " + string.Join(" | ", _columns.Select(c => c.Cell(row))) + " |";

    public static string F(double x, int digits) => x.ToString("F" + digits, CultureInfo.InvariantCulture);
    public static string N(long x) => x.ToString("N0", CultureInfo.InvariantCulture);
}
