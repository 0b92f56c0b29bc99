using System.Globalization;

namespace Kvq.Cli.Commands.Eval;

/// <summary>Comma-separated numbers of an option ("500,1000,1500"), with a one-line error naming the option.</summary>
public static class ListArgument
{
    public static int[] Ints(string option, string? text, int min)
    {
        var list = new List<int>();
        foreach (var part in Split(option, text))
        {
            if (!int.TryParse(part, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) || v < min)
                throw new CliException($"{option}: '{part}' is not a whole number >= {min}");
            list.Add(v);
        }
        return list.ToArray();
    }

    public static double[] Fractions(string option, string? text)
    {
        var list = new List<double>();
        foreach (var part in Split(option, text))
        {
            if (!double.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || v is < 0 or > 1)
                throw new CliException($"{option}: '{part}' is not a number between 0 and 1");
            list.Add(v);
        }
        return list.ToArray();
    }

    private static string[] Split(string option, string? text)
    {
        var parts = (text ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return parts.Length > 0 ? parts : throw new CliException($"{option}: no values given");
    }
}
