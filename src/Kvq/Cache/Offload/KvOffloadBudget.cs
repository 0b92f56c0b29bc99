using System.Globalization;

namespace Kvq.Cache.Offload;

/// <summary>
/// How many of a sequence's blocks attention reads per step when the cache is offloaded (Quest-style selection): every
/// block (<see cref="Full"/>, for checking), a fraction of the blocks a query can see, or a block count. The blocks of
/// the first <see cref="SinkTokens"/> tokens and of the last <see cref="RecentTokens"/> before each query are always
/// read and count against the budget; the rest are the blocks ranked best by <see cref="Rule"/> from the key summaries
/// (<see cref="BlockSummaries"/>).
/// </summary>
/// <param name="Fraction">Share of the visible blocks, in (0, 1]; 0 when <paramref name="Blocks"/> is given.</param>
/// <param name="Blocks">A fixed number of blocks; 0 when a fraction is given.</param>
/// <param name="BoxTokens">Tokens per min/max box of the summaries (<see cref="BlockSummaries"/>; 0 or a non-divisor of
/// the block size = the block). 8 by default: on books-19m copy recall at 25% under Quest's bound was 4.99 / 3.34
/// (filler 500 / 1500) with boxes of 8, 9.68 / 5.58 with whole 32-token blocks (RoPE turns the fast channels within a
/// block, loosening its box).</param>
/// <param name="Rule">How the blocks beyond the forced ones are ranked (<see cref="BlockRule"/>). Mass by default: on
/// books-19m at 25%, copy recall 2.14 / 2.02 (filler 500 / 1500; full cache 2.27 / 1.90) against 4.99 / 3.34 for
/// Quest's bound (docs/offload.md).</param>
/// <param name="Spread">Percent of each box's half width added to the score of its centre (100 = Quest's upper bound,
/// 0 = the centre's score). 35 by default: the bound ranks by the best case of a box, which RoPE and outliers make
/// loose; the centre alone ignores how far a box reaches (books-19m recall at 25%: 20, 35, 50, 65, 80 gave 2.08 / 2.18,
/// 2.14 / 2.02, 2.34 / 2.06, 2.70 / 2.43, 3.25 / 2.51).</param>
/// <param name="Cover">Mass and total rules: stop adding blocks once every query row's estimated share of softmax mass covered
/// reaches this percent (100 = always spend the budget).</param>
/// <param name="DenseLayers">The first this many layers read every block; the other layers share what is left of the
/// budget over all layers (so the blocks read per step, summed over layers, stay within the budget).</param>
public sealed record KvOffloadBudget(double Fraction, int Blocks, int SinkTokens = 4, int RecentTokens = 32, int BoxTokens = 8,
    BlockRule Rule = BlockRule.Mass, int Spread = 35, int Cover = 100, int DenseLayers = 0)
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
            if (Rule != BlockRule.Mass) args.Add("rule=" + Rule.ToString().ToLowerInvariant());
            if (Spread != 35) args.Add($"spread={Spread}");
            if (Cover != 100) args.Add($"cover={Cover}");
            if (DenseLayers != 0) args.Add($"dense={DenseLayers}");
            return args.Count == 0 ? "" : ":" + string.Join(',', args);
        }
    }

    /// <summary>Blocks to read out of <paramref name="visible"/> (before the forced ones are counted in).</summary>
    public int BlocksFor(int visible) =>
        Full ? visible : Blocks > 0 ? Math.Min(Blocks, visible) : Math.Min(visible, (int)Math.Ceiling(Fraction * visible - 1e-9));

    /// <summary>Blocks layer <paramref name="layer"/> of <paramref name="layers"/> reads out of <paramref name="visible"/>:
    /// <see cref="BlocksFor(int)"/>, or with <see cref="DenseLayers"/> every block in the first layers and an equal share
    /// of the rest of the budget (layers x <see cref="BlocksFor(int)"/>) in the others, rounded down.</summary>
    public int BlocksFor(int visible, int layer, int layers)
    {
        int per = BlocksFor(visible);
        if (Full || DenseLayers <= 0) return per;
        int dense = Math.Min(DenseLayers, layers);
        if (layer < dense) return visible;
        long left = (long)per * layers - (long)dense * visible;
        return (int)Math.Clamp(left / Math.Max(1, layers - dense), 0, visible);
    }

    /// <summary>Parses "full", a fraction ("0.25" or "25%", in (0, 1]) or a block count ("16"), optionally followed by
    /// ":recent=N,sink=N,box=N,rule=bound|mass,spread=P,cover=P" (tokens always read before each query, leading tokens
    /// always read, tokens per summary box, the ranking rule, and the mass rule's box spread and coverage in percent).</summary>
    /// <exception cref="KvSpecException">Anything else.</exception>
    public static KvOffloadBudget Parse(string text)
    {
        var parts = text.Trim().Split(':', 2);
        var b = ParseAmount(text, parts[0].Trim());
        if (parts.Length == 2)
            foreach (var arg in parts[1].Split(',', StringSplitOptions.TrimEntries))
            {
                var kv = arg.Split('=', 2, StringSplitOptions.TrimEntries);
                if (kv.Length == 2 && kv[0] == "rule")
                {
                    b = b with
                    {
                        Rule = kv[1] switch
                        {
                            "bound" => BlockRule.Bound,
                            "mass" => BlockRule.Mass,
                            "total" => BlockRule.Total,
                            _ => throw new KvSpecException($"offload budget '{text}': rule '{kv[1]}' is not bound, mass or total"),
                        },
                    };
                    continue;
                }
                if (kv.Length != 2 || !int.TryParse(kv[1], NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 0)
                    throw new KvSpecException($"offload budget '{text}': '{arg}' is not NAME=COUNT (recent, sink, box, spread, cover or dense; a count >= 0) or rule=bound|mass|total");
                if (kv[0] is "spread" or "cover" && n > 100)
                    throw new KvSpecException($"offload budget '{text}': {kv[0]}={n} is a percent in [0, 100]");
                b = kv[0] switch
                {
                    "recent" => b with { RecentTokens = n },
                    "sink" => b with { SinkTokens = n },
                    "box" => b with { BoxTokens = n },
                    "spread" => b with { Spread = n },
                    "cover" => b with { Cover = n },
                    "dense" => b with { DenseLayers = n },
                    _ => throw new KvSpecException($"offload budget '{text}': unknown argument '{kv[0]}' (recent, sink, box, rule, spread, cover, dense)"),
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

/// <summary>How a <see cref="BlockSelector"/> ranks the blocks it may add beyond the forced ones.</summary>
public enum BlockRule
{
    /// <summary>The largest upper bound of q·k over the chunk's query rows (Quest; below spread 100, the largest
    /// estimate): rows with large scores anywhere decide for the whole KV head.</summary>
    Bound,

    /// <summary>Per query row, each visible block's estimated share of the row's softmax mass (the row's block
    /// estimates through a softmax, weighted by the block's tokens, the forced blocks included); a block ranks by the
    /// largest share any row gives it, so a query head whose mass sits in one far block gets it even when another head
    /// of the group has larger scores elsewhere.</summary>
    Mass,

    /// <summary>As <see cref="Mass"/>, a block ranking by the sum of its shares over the rows (the estimated mass
    /// it adds to the chunk) instead of the largest.</summary>
    Total,
}
