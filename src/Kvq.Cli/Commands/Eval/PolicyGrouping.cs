using Kvq.Cache;

namespace Kvq.Cli.Commands.Eval;

/// <summary>Rows of a KV spec x token policy grid, grouped for <see cref="EvalPlots.GroupedBars"/>: one group per policy
/// ("none" for every token kept), one bar per KV format.</summary>
public static class PolicyGrouping
{
    public static bool HasPolicies(IReadOnlyList<KvCacheConfig> configs) => configs.Any(c => c.Policy != null);

    public static (List<string> Policies, List<(string Format, double[] Values)> Series) Group<T>(
        IReadOnlyList<KvCacheConfig> configs, IEnumerable<T> rows, Func<T, string> rowName, Func<T, double> value)
    {
        var byName = new Dictionary<string, KvCacheConfig>();
        foreach (var c in configs) byName[c.Name] = c;
        var policies = new List<string>();
        var formats = new List<string>();
        var cells = new Dictionary<(string, string), double>();
        foreach (var row in rows)
        {
            if (!byName.TryGetValue(rowName(row), out var c)) continue;
            string policy = c.Policy?.Name ?? "none", format = (c with { Policy = null }).Name;
            if (!policies.Contains(policy)) policies.Add(policy);
            if (!formats.Contains(format)) formats.Add(format);
            cells[(format, policy)] = value(row);
        }
        var series = formats.Select(f => (f, policies.Select(p => cells.TryGetValue((f, p), out var v) ? v : double.NaN).ToArray())).ToList();
        return (policies, series);
    }
}
