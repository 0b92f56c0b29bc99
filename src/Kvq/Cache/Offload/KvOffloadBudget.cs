using System.Globalization;

namespace Kvq.Cache.Offload;

/// <summary>
/// How many of a sequence's blocks attention reads per step when the cache is offloaded (Quest-style selection): every
/// block (<see cref="Full"/>, for checking), a fraction of the blocks a query can see, or a block count. The blocks of
/// the first <see cref="SinkTokens"/> tokens and of the last <see cref="RecentTokens"/> before each query are always
/// read and count against the budget; the rest are the blocks with the highest upper bound of q·k
/// (<see cref="BlockSummaries"/>).
/// </summary>
/// <param name="Fraction">Share of the visible blocks, in (0, 1]; 0 when <paramref name="Blocks"/> is given.</param>
/// <param name="Blocks">A fixed number of blocks; 0 when a fraction is given.</param>
/// <param name="BoxTokens">Tokens per min/max box of the summaries (<see cref="BlockSummaries"/>; 0 or a non-divisor of
/// the block size = the block). 8 by default: on books-19m copy recall at 25% was 4.99 / 3.34 (filler 500 / 1500) with
/// boxes of 8, 9.68 / 5.58 with whole 32-token blocks (RoPE turns the fast channels within a block, loosening its box).</param>
public sealed record KvOffloadBudget(double Fraction, int Blocks, int SinkTokens = 4, int RecentTokens = 32, int BoxTokens = 8)
{
    public bool Full => Fraction >= 1;

    /// <summary>"offload@full", "offload@25%", "offload@16blk".</summary>
    public string Name => "offload@" + (Full ? "full" : Blocks > 0 ? $"{Blocks}blk" : $"{Fraction * 100:0.##}%") + Arguments;

    private string Arguments
    {
        get
        {
            var args = new List<string>();
            if (RecentTokens != 32) args.Add($"recent={RecentTokens}");
            if (SinkTokens != 4) args.Add($"sink={SinkTokens}");
            if (BoxTokens != 8) args.Add($"box={BoxTokens}");
            return args.Count == 0 ? "" : ":" + string.Join(',', args);
        }
    }

    /// <summary>Blocks to read out of <paramref name="visible"/> (before the forced ones are counted in).</summary>
    public int BlocksFor(int visible) =>
        Full ? visible : Blocks > 0 ? Math.Min(Blocks, visible) : Math.Min(visible, (int)Math.Ceiling(Fraction * visible - 1e-9));

    /// <summary>Parses "full", a fraction ("0.25" or "25%", in (0, 1]) or a block count ("16"), optionally followed by
    /// ":recent=N,sink=N,box=N" (tokens always read before each query, leading tokens always read, tokens per summary box).</summary>
    /// <exception cref="KvSpecException">Anything else.</exception>
    public static KvOffloadBudget Parse(string text)
    {
        var parts = text.Trim().Split(':', 2);
        var b = ParseAmount(text, parts[0].Trim());
        if (parts.Length == 2)
            foreach (var arg in parts[1].Split(',', StringSplitOptions.TrimEntries))
            {
                var kv = arg.Split('=', 2, StringSplitOptions.TrimEntries);
                if (kv.Length != 2 || !int.TryParse(kv[1], NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 0)
                    throw new KvSpecException($"offload budget '{text}': '{arg}' is not NAME=COUNT (recent, sink or box; a count >= 0)");
                b = kv[0] switch
                {
                    "recent" => b with { RecentTokens = n },
                    "sink" => b with { SinkTokens = n },
                    "box" => b with { BoxTokens = n },
                    _ => throw new KvSpecException($"offload budget '{text}': unknown argument '{kv[0]}' (recent, sink, box)"),
                };
            }
        return b;
    }

    private static KvOffloadBudget ParseAmount(string text, string t)
    {
        if (t.Equals("full", StringComparison.OrdinalIgnoreCase)) return new KvOffloadBudget(1, 0);
        bool percent = t.EndsWith('%');
        if (double.TryParse(percent ? t[..^1] : t, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v))
        {
            if (percent) v /= 100;
            if (!percent && v >= 1 && v == Math.Floor(v) && v <= int.MaxValue) return new KvOffloadBudget(0, (int)v);
            if (v > 0 && v <= 1) return new KvOffloadBudget(v, 0);
        }
        throw new KvSpecException($"offload budget '{text}': expected 'full', a fraction of the blocks in (0, 1] (0.25 or 25%), or a block count (16)");
    }
}
