using System.Globalization;

namespace Kvq.Cache.Policies;

/// <summary>
/// The "key=value,key=value" arguments of a policy spec. Each policy takes the ones it knows with typed getters and
/// then calls <see cref="CheckAllUsed"/>, so a misspelt or unknown argument is a typed error naming the policy.
/// </summary>
public sealed class PolicyArgs
{
    private readonly string _policy;
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);

    public PolicyArgs(string policy, string? text)
    {
        _policy = policy;
        if (string.IsNullOrWhiteSpace(text)) return;
        foreach (var item in text.Split(',', StringSplitOptions.TrimEntries))
        {
            int eq = item.IndexOf('=');
            if (eq <= 0 || eq == item.Length - 1)
                throw new KvSpecException($"policy '{policy}': argument '{item}' is not key=value");
            var key = item[..eq].Trim();
            if (!_values.TryAdd(key, item[(eq + 1)..].Trim()))
                throw new KvSpecException($"policy '{policy}': argument '{key}' given twice");
        }
    }

    /// <summary>Whether an item of a wrapper's argument list is one of its own key=value arguments.</summary>
    public static bool IsKeyValue(string item) => item.Contains('=') && !item.Contains(':');

    public int Int(string key, int fallback, int min, int max = int.MaxValue)
    {
        if (!Take(key, out var s)) return fallback;
        if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) || v < min || v > max)
            throw new KvSpecException($"policy '{_policy}': {key}={s} must be a whole number in {min}..{(max == int.MaxValue ? "" : max)}");
        return v;
    }

    public double Double(string key, double fallback, double min, double max)
    {
        if (!Take(key, out var s)) return fallback;
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !(v >= min && v <= max))
            throw new KvSpecException($"policy '{_policy}': {key}={s} must be a number in [{min}, {max}]");
        return v;
    }

    public string Choice(string key, string fallback, params string[] choices)
    {
        if (!Take(key, out var s)) return fallback;
        if (Array.IndexOf(choices, s) < 0)
            throw new KvSpecException($"policy '{_policy}': {key}={s} must be one of {string.Join(", ", choices)}");
        return s;
    }

    public void CheckAllUsed(params string[] known)
    {
        foreach (var k in _values.Keys)
            if (!_used.Contains(k))
                throw new KvSpecException($"policy '{_policy}': unknown argument '{k}' (known: {(known.Length == 0 ? "none" : string.Join(", ", known))})");
    }

    private bool Take(string key, out string value)
    {
        _used.Add(key);
        return _values.TryGetValue(key, out value!);
    }
}
