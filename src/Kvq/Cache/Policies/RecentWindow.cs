namespace Kvq.Cache.Policies;

/// <summary>A recent window given as a fraction of the budget (below 1, e.g. 0.5) or as tokens (1 or more): scores of
/// the slots whose token is within it are raised to +inf so they are always kept.</summary>
internal static class RecentWindow
{
    /// <summary>Tokens in the window when a layer keeps <paramref name="keep"/> tokens.</summary>
    public static int Tokens(double recent, int keep) => recent < 1 ? (int)Math.Ceiling(recent * keep) : (int)recent;

    /// <summary>Sets scores of slots holding one of the last <paramref name="window"/> tokens (position &gt;= length - window) to +inf.</summary>
    public static void Protect(ReadOnlySpan<int> positions, int length, int window, Span<float> scores)
    {
        int first = length - window;
        for (int s = positions.Length - 1; s >= 0 && positions[s] >= first; s--) scores[s] = float.PositiveInfinity;
    }
}
