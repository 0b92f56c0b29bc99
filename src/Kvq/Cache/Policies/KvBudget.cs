using System.Globalization;

namespace Kvq.Cache.Policies;

/// <summary>How a layer's kept tokens are chosen: each KV head its own top-k (kvpress-style, the default), or one
/// choice per layer from the heads' summed scores (all heads keep the same tokens).</summary>
public enum BudgetScope { Head, Layer }

/// <summary>
/// How many tokens a layer keeps: a fraction of the tokens seen (<see cref="Value"/> below 1, e.g. 0.25) or a fixed
/// count (1 or more, e.g. 512). Every KV head of a layer keeps the same count, so heads share block ids.
/// </summary>
public readonly record struct KvBudget(double Value, BudgetScope Scope = BudgetScope.Head)
{
    public bool IsFraction => Value < 1;

    /// <summary>Tokens to keep per layer on average after <paramref name="length"/> tokens.</summary>
    public int Tokens(int length) => IsFraction ? (int)Math.Ceiling(Value * length) : (int)Math.Min(Value, int.MaxValue);

    /// <summary>Parses "0.25", "25%" or "512" (and the scope "head" or "layer").</summary>
    public static KvBudget Parse(string text, string scope = "head")
    {
        var t = text.Trim();
        double v;
        bool ok = t.EndsWith('%')
            ? double.TryParse(t[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out v) && (v /= 100) >= 0
            : double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out v);
        if (!ok || double.IsNaN(v) || v <= 0 || (v >= 1 && v != Math.Floor(v)))
            throw new KvSpecException($"budget '{text}': give a fraction of the tokens below 1 (0.25 or 25%) or a whole number of tokens (512)");
        var s = scope.Trim().ToLowerInvariant() switch
        {
            "head" => BudgetScope.Head,
            "layer" => BudgetScope.Layer,
            _ => throw new KvSpecException($"budget scope '{scope}': expected head or layer"),
        };
        return new KvBudget(v, s);
    }

    public override string ToString() =>
        (IsFraction ? (Value * 100).ToString("0.##", CultureInfo.InvariantCulture) + "%" : Value.ToString("0", CultureInfo.InvariantCulture))
        + (Scope == BudgetScope.Layer ? "/layer" : "");
}

/// <summary>A policy with its budget, as a cache config carries it.</summary>
public sealed record KvPolicyConfig(KvPolicy Policy, KvBudget Budget)
{
    /// <summary>"h2o@25%", "snapkv:window=16@512".</summary>
    public string Name => $"{Policy.Name}@{Budget}";

    /// <summary>
    /// The most slots any layer of a sequence holds on its way to <paramref name="length"/> tokens when tokens come in
    /// chunks of at most <paramref name="chunk"/>: what the policy keeps at that length (budgets grow with the length)
    /// plus one chunk appended before the policy runs, never more than the tokens themselves.
    /// </summary>
    public int PeakSlots(int length, int chunk, int layers, int sinkTokens)
    {
        int average = Budget.Tokens(length), peak = 0;
        int sinks = Math.Max(sinkTokens, Policy.SinkTokens);
        for (int l = 0; l < layers; l++)
            peak = Math.Max(peak, Math.Max(Policy.LayerBudget(l, layers, average), sinks + 1) + chunk);
        return Math.Min(length, peak);
    }
}
