using System.Globalization;

namespace Kvq.Cli.Validation;

/// <summary>The values an option accepts: an interval with open or closed ends (infinite ends mean "no bound"), and how
/// to say it to a user ("from 1 to 8", "in (0, 1]", ">= 0").</summary>
public readonly record struct ValueRange(double Min, double Max, bool MinOpen = false, bool MaxOpen = false)
{
    public static ValueRange AtLeast(double min) => new(min, double.PositiveInfinity);
    public static ValueRange Above(double min) => new(min, double.PositiveInfinity, MinOpen: true);
    public static ValueRange Between(double min, double max) => new(min, max);

    public bool Contains(double x) =>
        (MinOpen ? x > Min : x >= Min) && (MaxOpen ? x < Max : x <= Max);

    /// <summary>"from 1 to 8" for whole numbers; "in (0, 1]" for others; ">= 0" or "> 0" without an upper bound.</summary>
    public string Describe(bool whole)
    {
        bool noMax = double.IsPositiveInfinity(Max) || (whole && Max >= long.MaxValue);
        if (noMax) return MinOpen ? $"> {F(Min)}" : $">= {F(Min)}";
        if (whole) return $"from {F(Min)} to {F(Max)}";
        return $"in {(MinOpen ? '(' : '[')}{F(Min)}, {F(Max)}{(MaxOpen ? ')' : ']')}";
    }

    private static string F(double x) => x.ToString("0.###", CultureInfo.InvariantCulture);
}
