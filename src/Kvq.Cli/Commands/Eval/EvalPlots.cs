using System.Globalization;
using ScottPlot;

namespace Kvq.Cli.Commands.Eval;

/// <summary>The report's PNG plots (ScottPlot): labelled points, lines per spec, and a matrix as a heat map.</summary>
public static class EvalPlots
{
    private const int Width = 900, Height = 560;

    /// <summary>One marker per point with its label beside it (e.g. perplexity vs bits per element, one point per spec).
    /// Labels of points close to an earlier one are stacked below it so they stay readable.</summary>
    /// <param name="logY">Plot y on a log10 axis (points with y &lt;= 0 are left out).</param>
    public static void LabeledPoints(string path, string title, string xLabel, string yLabel,
        IReadOnlyList<(string Label, double X, double Y)> points, bool logY = false)
    {
        var plt = new Plot();
        var shown = points.Where(p => !logY || p.Y > 0).Select(p => (p.Label, p.X, Y: logY ? Math.Log10(p.Y) : p.Y)).ToList();
        if (shown.Count > 0)
        {
            var sp = plt.Add.ScatterPoints(shown.Select(p => p.X).ToArray(), shown.Select(p => p.Y).ToArray());
            sp.MarkerSize = 9;
        }
        double xr = Span(shown.Select(p => p.X)), yr = Span(shown.Select(p => p.Y));
        for (int i = 0; i < shown.Count; i++)
        {
            var p = shown[i];
            int near = 0; // earlier points within ~4% of both axes: stack this label under theirs
            for (int j = 0; j < i; j++)
                if (Math.Abs(shown[j].X - p.X) < 0.04 * xr && Math.Abs(shown[j].Y - p.Y) < 0.04 * yr) near++;
            var t = plt.Add.Text(p.Label, p.X, p.Y);
            t.LabelFontSize = 13;
            t.LabelAlignment = Alignment.LowerLeft;
            t.OffsetX = 6;
            t.OffsetY = -4 + 16 * near;
        }
        if (logY && shown.Count > 0) LogTicks(plt, shown.Min(p => p.Y), shown.Max(p => p.Y));
        Finish(plt, path, title, xLabel, yLabel, legend: false);
    }

    private static double Span(IEnumerable<double> values)
    {
        var list = values.ToList();
        return list.Count < 2 ? 1 : Math.Max(1e-12, list.Max() - list.Min());
    }

    /// <summary>1-2-5 ticks on a left axis that holds log10 values in [lo, hi].</summary>
    private static void LogTicks(Plot plt, double lo, double hi)
    {
        var ticks = new List<double>();
        for (int e = (int)Math.Floor(lo); e <= (int)Math.Ceiling(hi); e++)
            foreach (double m in new[] { 1.0, 2.0, 5.0 }) ticks.Add(m * Math.Pow(10, e));
        plt.Axes.Left.SetTicks(ticks.Select(Math.Log10).ToArray(), ticks.Select(v => v.ToString("G3", CultureInfo.InvariantCulture)).ToArray());
    }

    /// <summary>One line with markers per series (e.g. KV memory vs context, one line per spec).</summary>
    /// <param name="log2X">Plot x on a log2 axis with ticks at the data's x values.</param>
    /// <param name="logY">Plot y on a log10 axis with 1-2-5 ticks (values must be positive).</param>
    /// <param name="reference">A horizontal line (e.g. the model's weights), with its legend text.</param>
    public static void Lines(string path, string title, string xLabel, string yLabel,
        IReadOnlyList<(string Name, double[] X, double[] Y)> series, bool log2X = false, bool logY = false,
        (string Name, double Y)? reference = null)
    {
        var plt = new Plot();
        var ticks = new SortedSet<double>();
        double yMin = double.PositiveInfinity, yMax = double.NegativeInfinity;
        foreach (var (name, x, y) in series)
        {
            var sx = log2X ? x.Select(Math.Log2).ToArray() : x;
            var sy = logY ? y.Select(Math.Log10).ToArray() : y;
            foreach (var v in y) { yMin = Math.Min(yMin, v); yMax = Math.Max(yMax, v); }
            var s = plt.Add.Scatter(sx, sy);
            s.LegendText = name;
            s.MarkerSize = 7;
            s.LineWidth = 2;
            foreach (var v in x) ticks.Add(v);
        }
        if (reference is { } r)
        {
            yMin = Math.Min(yMin, r.Y);
            yMax = Math.Max(yMax, r.Y);
            var h = plt.Add.HorizontalLine(logY ? Math.Log10(r.Y) : r.Y);
            h.LegendText = r.Name;
            h.LinePattern = LinePattern.Dashed;
        }
        if (log2X && ticks.Count > 0)
            plt.Axes.Bottom.SetTicks(ticks.Select(Math.Log2).ToArray(), ticks.Select(v => v.ToString("0", CultureInfo.InvariantCulture)).ToArray());
        if (logY && yMin > 0 && yMax >= yMin) LogTicks(plt, Math.Log10(yMin), Math.Log10(yMax));
        Finish(plt, path, title, xLabel, yLabel, legend: true);
    }

    /// <summary>Grouped bars: one group per category (e.g. a token policy), one coloured bar per series in each
    /// (e.g. a KV format), with the value written above each bar.</summary>
    /// <param name="series">One coloured bar per entry in each group: its values[category]; NaN = no bar.</param>
    public static void GroupedBars(string path, string title, string yLabel, IReadOnlyList<string> categories,
        IReadOnlyList<(string Name, double[] Values)> series, (string Name, double Y)? reference = null)
    {
        var plt = new Plot();
        var palette = new ScottPlot.Palettes.Category10();
        int ns = series.Count;
        double width = 0.8 / Math.Max(1, ns);
        double top = 0;
        for (int si = 0; si < ns; si++)
        {
            var color = palette.GetColor(si);
            var bars = new List<Bar>();
            for (int c = 0; c < categories.Count; c++)
            {
                double v = series[si].Values[c];
                if (double.IsNaN(v)) continue;
                top = Math.Max(top, v);
                bars.Add(new Bar { Position = c + (si - (ns - 1) / 2.0) * width, Value = v, FillColor = color, Size = width * 0.95 });
                var t = plt.Add.Text(v.ToString(v >= 100 ? "0" : "0.0", CultureInfo.InvariantCulture), c + (si - (ns - 1) / 2.0) * width, v);
                t.LabelAlignment = Alignment.LowerCenter;
                t.LabelFontSize = 10;
            }
            plt.Add.Bars(bars);
            plt.Legend.ManualItems.Add(new LegendItem { LabelText = series[si].Name, FillColor = color });
        }
        if (reference is { } r)
        {
            var h = plt.Add.HorizontalLine(r.Y);
            h.LinePattern = LinePattern.Dashed;
            h.Color = Colors.Gray;
            plt.Legend.ManualItems.Add(new LegendItem { LabelText = r.Name, LineColor = Colors.Gray, LinePattern = LinePattern.Dashed, LineWidth = 2 });
            top = Math.Max(top, r.Y);
        }
        plt.Axes.Bottom.SetTicks(Enumerable.Range(0, categories.Count).Select(c => (double)c).ToArray(), categories.ToArray());
        plt.Axes.Bottom.TickLabelStyle.Rotation = -30;
        plt.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleRight;
        plt.Axes.Bottom.MinimumSize = 110;
        plt.Axes.SetLimits(-0.6, categories.Count - 0.4, 0, top * 1.12);
        Finish(plt, path, title, "", yLabel, legend: true);
    }

    /// <summary>A matrix (rows x columns, e.g. depth x length) as coloured cells (viridis over [min, max]) with their values written in.</summary>
    /// <param name="values">values[row, column]; row 0 is drawn at the top.</param>
    public static void Heatmap(string path, string title, string xLabel, string yLabel, string[] columns, string[] rows,
        double[,] values, double min = 0, double max = 1)
    {
        var plt = new Plot();
        int nr = rows.Length, nc = columns.Length;
        var colormap = new ScottPlot.Colormaps.Viridis();
        // Cell (r, c) is the rectangle x in [c, c+1], y in [nr-1-r, nr-r] (row 0 on top), coloured by its value and with
        // the value written in it (drawn as rectangles: exact cell edges for any matrix size, 1 x n included).
        for (int r = 0; r < nr; r++)
            for (int c = 0; c < nc; c++)
            {
                double v = values[r, c];
                var cell = plt.Add.Rectangle(c, c + 1, nr - 1 - r, nr - r);
                cell.FillStyle.Color = double.IsNaN(v) ? Colors.LightGray : colormap.GetColor(Math.Clamp((v - min) / (max - min), 0, 1));
                cell.LineStyle.Color = Colors.White;
                cell.LineStyle.Width = 1;
                var t = plt.Add.Text(double.IsNaN(v) ? "-" : v.ToString("0.00", CultureInfo.InvariantCulture), c + 0.5, nr - r - 0.5);
                t.LabelAlignment = Alignment.MiddleCenter;
                t.LabelFontSize = 14;
                t.LabelFontColor = v > (min + max) / 2 ? Colors.Black : Colors.White;
            }
        plt.Axes.Bottom.SetTicks(Enumerable.Range(0, nc).Select(c => c + 0.5).ToArray(), columns);
        plt.Axes.Left.SetTicks(Enumerable.Range(0, nr).Select(r => nr - r - 0.5).ToArray(), rows);
        plt.Axes.SetLimits(0, nc, 0, nr);
        Finish(plt, path, title, xLabel, yLabel, legend: false);
    }

    private static void Finish(Plot plt, string path, string title, string xLabel, string yLabel, bool legend)
    {
        plt.Title(title);
        plt.XLabel(xLabel);
        plt.YLabel(yLabel);
        if (legend) plt.ShowLegend(Alignment.UpperLeft);
        plt.SavePng(path, Width, Height);
    }
}
