using System.CommandLine;
using Kvq.Cache;
using Kvq.Cache.Policies;

namespace Kvq.Cli.Commands;

/// <summary>--policy, --budget and --budget-per for commands that build a KV cache: which tokens stay (token policies,
/// kvq eval --list) and how many. Checked before any model is loaded; mistakes are one typed line (exit 2).</summary>
public sealed class KvPolicyOptions
{
    public Option<string[]> Policy { get; }
    public Option<string?> Budget { get; } = new("--budget")
    {
        Description = "tokens each layer keeps under --policy: a fraction of the tokens seen below 1 (0.25 or 25%) or a count (512)",
    };
    public Option<string> BudgetPer { get; } = new("--budget-per")
    {
        Description = "head: each KV head keeps its own top tokens (default); layer: the heads of a layer keep the same tokens",
        DefaultValueFactory = _ => "head",
    };

    public KvPolicyOptions(bool grid)
    {
        Policy = new Option<string[]>("--policy")
        {
            Description = grid
                ? "token policy NAME[:ARGS] (repeatable: each is crossed with every --kv spec; 'none' = keep every token), e.g. h2o, snapkv:window=32,pool=7, pyramid:h2o, merge:h2o (kvq eval --list)"
                : "token policy NAME[:ARGS], e.g. streaming:sink=4, h2o:recent=0.5, merge:h2o (kvq eval --list)",
            AllowMultipleArgumentsPerToken = false,
        };
    }

    public void AddTo(Command cmd)
    {
        cmd.Add(Policy);
        cmd.Add(Budget);
        cmd.Add(BudgetPer);
    }

    /// <summary>The policies given (null for 'none'), each with the budget; [null] when --policy is not given.</summary>
    public IReadOnlyList<KvPolicyConfig?> Parse(ParseResult r)
    {
        var specs = r.GetValue(Policy) ?? [];
        var budgetText = r.GetValue(Budget);
        var list = new List<KvPolicyConfig?>();
        KvBudget? budget = budgetText == null ? null : KvBudget.Parse(budgetText, r.GetValue(BudgetPer) ?? "head");
        foreach (var spec in specs)
        {
            var p = KvPolicyRegistry.TryParse(spec);
            if (p == null) { list.Add(null); continue; }
            if (budget is not { } b) throw new CliException($"--policy {spec}: give --budget (a fraction below 1 such as 0.25, or a token count such as 512)");
            list.Add(new KvPolicyConfig(p, b));
        }
        if (list.Count == 0)
        {
            if (budgetText != null) throw new CliException("--budget needs --policy (which tokens to keep)");
            list.Add(null);
        }
        return list;
    }

    /// <summary>The configs of one KV spec crossed with every policy.</summary>
    public static IEnumerable<KvCacheConfig> Cross(KvCacheConfig config, IReadOnlyList<KvPolicyConfig?> policies)
    {
        foreach (var p in policies) yield return config with { Policy = p };
    }
}
