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
public sealed record KvOffloadBudget(double Fraction, int Blocks, int SinkTokens = 4, int RecentTokens = 32)
{
    public bool Full => Fraction >= 1;

    /// <summary>"offload@full", "offload@25%", "offload@16blk".</summary>
    public string Name => "offload@" + (Full ? "full" : Blocks > 0 ? $"{Blocks}blk" : $"{Fraction * 100:0.##}%");

    /// <summary>Blocks to read out of <paramref name="visible"/> (before the forced ones are counted in).</summary>
    public int BlocksFor(int visible) =>
        Full ? visible : Blocks > 0 ? Math.Min(Blocks, visible) : Math.Min(visible, (int)Math.Ceiling(Fraction * visible - 1e-9));

    /// <summary>Parses "full", a fraction ("0.25" or "25%", in (0, 1]) or a block count ("16").</summary>
    /// <exception cref="KvSpecException">Anything else.</exception>
    public static KvOffloadBudget Parse(string text)
    {
        var t = text.Trim();
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
