using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace Kvq.Cli.Validation;

/// <summary>
/// Options whose values are checked while parsing, with messages in the user's terms ("--top-p 2: expected a number in
/// (0, 1] (1 = off)") instead of .NET type names, so a bad value is a parse error: one line, exit code 2, before any
/// model is loaded. Every command builds its numeric options here; a check that spans options goes in
/// <see cref="Require"/>.
/// </summary>
public static class CheckedOption
{
    /// <summary>A whole number in <paramref name="range"/>; <paramref name="hint"/> (e.g. "0 = all") is added to the message.</summary>
    public static Option<int> Int(string name, string description, int defaultValue, ValueRange range, string? hint = null,
        params string[] aliases) =>
        new(name, aliases)
        {
            Description = description,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r => (int)ParseWhole(r, name, range, hint, int.MinValue, int.MaxValue),
        };

    /// <summary>A whole number in <paramref name="range"/>, or null when the option is not given (a default that depends
    /// on the model, such as the trained context).</summary>
    public static Option<int?> OptionalInt(string name, string description, ValueRange range, string? hint = null,
        params string[] aliases) =>
        new(name, aliases)
        {
            Description = description,
            CustomParser = r => (int)ParseWhole(r, name, range, hint, int.MinValue, int.MaxValue),
        };

    /// <summary>A 64-bit whole number in <paramref name="range"/> (seeds).</summary>
    public static Option<long> Long(string name, string description, long defaultValue, ValueRange range, string? hint = null,
        params string[] aliases) =>
        new(name, aliases)
        {
            Description = description,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r => ParseWhole(r, name, range, hint, long.MinValue, long.MaxValue),
        };

    /// <summary>A finite number in <paramref name="range"/> (NaN and infinities refused).</summary>
    public static Option<float> Float(string name, string description, float defaultValue, ValueRange range, string? hint = null,
        params string[] aliases) =>
        new(name, aliases)
        {
            Description = description,
            DefaultValueFactory = _ => defaultValue,
            CustomParser = r => ParseFloat(r, name, range, hint),
        };

    /// <summary>A relative amount given as a percentage ("2%") or a fraction ("0.02"), in <paramref name="range"/> (as a
    /// fraction), or null when the option is not given.</summary>
    public static Option<double?> OptionalPercent(string name, string description, ValueRange range) =>
        new(name)
        {
            Description = description,
            CustomParser = r =>
            {
                var (used, text) = Token(r, name);
                if (text == null) return null;
                var expected = $"expected a percentage or fraction {range.Describe(whole: false)} (e.g. 2% or 0.02)";
                bool pct = text.EndsWith('%');
                if (!double.TryParse(pct ? text[..^1] : text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
                {
                    r.AddError($"{used} {text}: {expected}");
                    return null;
                }
                if (pct) v /= 100;
                if (!range.Contains(v))
                {
                    r.AddError($"{used} {text}: {expected}");
                    return null;
                }
                return v;
            },
        };

    /// <summary>A check across options of <paramref name="cmd"/>: <paramref name="check"/> returns the message of what is
    /// wrong (in the user's terms, naming the options), or null.</summary>
    public static void Require(Command cmd, Func<CommandResult, string?> check) =>
        cmd.Validators.Add(r =>
        {
            if (check(r) is { } message) r.AddError(message);
        });

    private static long ParseWhole(ArgumentResult r, string name, ValueRange range, string? hint, long min, long max)
    {
        var (used, text) = Token(r, name);
        if (text == null) return 0;
        var expected = $"expected a whole number {range.Describe(whole: true)}{Hint(hint)}";
        if (!long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v))
        {
            bool digits = text.TrimStart('-', '+').All(char.IsAsciiDigit) && text.TrimStart('-', '+').Length > 0;
            r.AddError($"{used} {text}: {(digits ? "too large: " : "")}{expected}");
            return 0;
        }
        if (v < min || v > max || !range.Contains(v))
        {
            r.AddError($"{used} {text}: {expected}");
            return 0;
        }
        return v;
    }

    private static float ParseFloat(ArgumentResult r, string name, ValueRange range, string? hint)
    {
        var (used, text) = Token(r, name);
        if (text == null) return 0;
        var expected = $"expected a number {range.Describe(whole: false)}{Hint(hint)}";
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
        {
            r.AddError($"{used} {text}: {expected}");
            return 0;
        }
        if (double.IsNaN(v) || double.IsInfinity(v) || !float.IsFinite((float)v))
        {
            r.AddError($"{used} {text}: not a finite number; {expected}");
            return 0;
        }
        if (!range.Contains(v))
        {
            r.AddError($"{used} {text}: {expected}");
            return 0;
        }
        return (float)v;
    }

    /// <summary>The name the user typed (an alias such as -n, or the option's name) and the value's text.</summary>
    private static (string Used, string? Text) Token(ArgumentResult r, string name)
    {
        string used = (r.Parent as OptionResult)?.IdentifierToken?.Value ?? name;
        if (r.Tokens.Count == 0) return (used, null);
        return (used, r.Tokens[^1].Value);
    }

    private static string Hint(string? hint) => hint == null ? "" : $" ({hint})";
}
