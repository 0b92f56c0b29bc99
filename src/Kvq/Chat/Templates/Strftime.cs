using System.Globalization;
using System.Text;

namespace Kvq.Chat.Templates;

/// <summary>Python's strftime for the directives chat templates use (%d %b %Y and friends), English names, with
/// glibc's "%-d" (no padding).</summary>
internal static class Strftime
{
    public static string Format(DateTimeOffset t, string format, SourcePos at)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c != '%' || i + 1 >= format.Length) { sb.Append(c); continue; }
            char d = format[++i];
            bool noPad = d == '-' && i + 1 < format.Length;
            if (noPad) d = format[++i];
            string Pad(int v, int width) => noPad ? v.ToString(inv) : v.ToString(new string('0', width), inv);
            sb.Append(d switch
            {
                'Y' => t.Year.ToString(inv),
                'y' => Pad(t.Year % 100, 2),
                'm' => Pad(t.Month, 2),
                'd' => Pad(t.Day, 2),
                'e' => t.Day.ToString(inv).PadLeft(2),
                'H' => Pad(t.Hour, 2),
                'I' => Pad(t.Hour % 12 == 0 ? 12 : t.Hour % 12, 2),
                'M' => Pad(t.Minute, 2),
                'S' => Pad(t.Second, 2),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'j' => Pad(t.DayOfYear, 3),
                'b' or 'h' => inv.DateTimeFormat.GetAbbreviatedMonthName(t.Month),
                'B' => inv.DateTimeFormat.GetMonthName(t.Month),
                'a' => inv.DateTimeFormat.GetAbbreviatedDayName(t.DayOfWeek),
                'A' => inv.DateTimeFormat.GetDayName(t.DayOfWeek),
                'w' => ((int)t.DayOfWeek).ToString(inv),
                '%' => "%",
                _ => throw at.Render($"strftime_now: unsupported directive '%{d}'"),
            });
        }
        return sb.ToString();
    }
}
