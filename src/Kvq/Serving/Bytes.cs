using System.Globalization;

namespace Kvq.Serving;

/// <summary>Byte sizes as people write them: "64MiB", "2GiB", "512k", "1e9".</summary>
public static class Bytes
{
    /// <summary>Parses a size; binary (KiB, MiB, GiB) and decimal (KB, MB, GB) units, k/m/g meaning binary.</summary>
    public static long Parse(string text)
    {
        var s = text.Trim();
        int i = 0;
        while (i < s.Length && (char.IsDigit(s[i]) || s[i] == '.' || s[i] == 'e' || s[i] == 'E' || s[i] == '+')) i++;
        if (i == 0 || !double.TryParse(s[..i], NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || value <= 0
            || double.IsInfinity(value))
            throw new FormatException($"'{text}' is not a size: expected a positive number with an optional unit, e.g. 64MiB or 2GiB");
        double unit = s[i..].Trim().ToLowerInvariant() switch
        {
            "" or "b" => 1,
            "k" or "kib" => 1L << 10,
            "m" or "mib" => 1L << 20,
            "g" or "gib" => 1L << 30,
            "t" or "tib" => 1L << 40,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "tb" => 1e12,
            var u => throw new FormatException($"'{text}': unknown size unit '{u}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"),
        };
        double bytes = Math.Floor(value * unit);
        if (bytes < 1 || bytes > long.MaxValue / 2) throw new FormatException($"'{text}' is out of range");
        return (long)bytes;
    }

    public static string Format(long bytes) => bytes switch
    {
        >= 1L << 30 => (bytes / (double)(1L << 30)).ToString("0.##", CultureInfo.InvariantCulture) + " GiB",
        >= 1L << 20 => (bytes / (double)(1L << 20)).ToString("0.##", CultureInfo.InvariantCulture) + " MiB",
        >= 1L << 10 => (bytes / (double)(1L << 10)).ToString("0.##", CultureInfo.InvariantCulture) + " KiB",
        _ => bytes.ToString(CultureInfo.InvariantCulture) + " B",
    };
}
