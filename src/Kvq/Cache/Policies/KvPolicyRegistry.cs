namespace Kvq.Cache.Policies;

/// <summary>
/// Policy names the CLI accepts (--policy NAME[:ARGS]) and the factory behind each. Adding a policy = a class, a row
/// here, a row in the test matrix. Wrappers take another spec after their own key=value arguments:
/// pyramid:h2o, pyramid:beta=10,snapkv:window=16, merge:h2o:recent=0.25, compose:knorm+h2o.
/// </summary>
public static class KvPolicyRegistry
{
    private sealed record Entry(string Name, string Description, Func<string?, KvPolicy> Create);

    private static readonly List<Entry> Entries =
    [
        new("streaming", "StreamingLLM: attention sinks + recent window (args: sink=4)",
            a => StreamingLlmPolicy.Create(new PolicyArgs("streaming", a))),
        new("h2o", "H2O: heavy hitters by accumulated attention + recent window (args: recent=0.5 of the budget or tokens, sink=0)",
            a => H2oPolicy.Create(new PolicyArgs("h2o", a))),
        new("snapkv", "SnapKV: attention of the last queries of each chunk, average-pooled (args: window=32, pool=7, sink=0)",
            a => SnapKvPolicy.Create(new PolicyArgs("snapkv", a))),
        new("tova", "TOVA: attention of the last query (args: sink=0)",
            a => TovaPolicy.Create(new PolicyArgs("tova", a))),
        new("knorm", "Key norm: keep the keys with the lowest L2 norm, no attention needed (args: sink=0)",
            a => KnormPolicy.Create(new PolicyArgs("knorm", a))),
        new("pyramid", "PyramidKV per-layer budgets over another policy: pyramid[:beta=20,]INNER (default inner snapkv)",
            a => Wrapper("pyramid", a, "snapkv", (args, inner) => new PyramidPolicy(Parse(inner), args.Double("beta", 20, 1, 1e6)), "beta")),
        new("merge", "merge evicted tokens into their most similar kept token (CaM/D2O): merge[:threshold=-1,]INNER (default inner h2o)",
            a => Wrapper("merge", a, "h2o", (args, inner) => new MergePolicy(Parse(inner), args.Double("threshold", -1, -1, 1)), "threshold")),
        new("compose", "two policies sharing the budget: compose[:share=0.5,]A+B (A keeps share x budget, B the rest)",
            a => Wrapper("compose", a, null, (args, inner) => Compose(inner, args.Double("share", 0.5, 0, 1)), "share")),
    ];

    public static IEnumerable<(string Name, string Description)> Policies
    {
        get { foreach (var e in Entries) yield return (e.Name, e.Description); }
    }

    /// <summary>A policy from its spec, or null for "none" / empty. Throws <see cref="KvSpecException"/> naming the problem.</summary>
    public static KvPolicy? TryParse(string? spec)
    {
        if (string.IsNullOrWhiteSpace(spec) || spec.Trim() == "none") return null;
        return Parse(spec);
    }

    public static KvPolicy Parse(string spec)
    {
        spec = spec.Trim();
        int colon = spec.IndexOf(':');
        var name = colon < 0 ? spec : spec[..colon];
        var args = colon < 0 ? null : spec[(colon + 1)..];
        var entry = Entries.Find(e => e.Name == name)
                    ?? throw new KvSpecException($"unknown policy '{name}' (known: none, {string.Join(", ", Entries.ConvertAll(e => e.Name))})");
        var policy = entry.Create(args);
        policy.Name = spec;
        return policy;
    }

    /// <summary>Splits a wrapper's arguments into its own leading key=value items and the inner spec (the rest).</summary>
    private static KvPolicy Wrapper(string name, string? text, string? defaultInner, Func<PolicyArgs, string, KvPolicy> make, params string[] known)
    {
        var items = (text ?? "").Split(',', StringSplitOptions.TrimEntries);
        int own = 0;
        while (own < items.Length && PolicyArgs.IsKeyValue(items[own])) own++;
        var inner = string.Join(',', items[own..]);
        if (inner.Length == 0)
            inner = defaultInner ?? throw new KvSpecException($"policy '{name}': give the policies to run, e.g. {name}:knorm+h2o");
        var args = new PolicyArgs(name, string.Join(',', items[..own]));
        var policy = make(args, inner);
        args.CheckAllUsed(known);
        return policy;
    }

    private static ComposedPolicy Compose(string inner, double share)
    {
        var parts = inner.Split('+', StringSplitOptions.TrimEntries);
        if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
            throw new KvSpecException($"policy 'compose': '{inner}' must be two policies joined by '+', e.g. knorm+h2o");
        return new ComposedPolicy(Parse(parts[0]), Parse(parts[1]), share);
    }
}
