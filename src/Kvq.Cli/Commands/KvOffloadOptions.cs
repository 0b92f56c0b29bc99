using System.CommandLine;
using Kvq.Cache;
using Kvq.Cache.Offload;
using Kvq.Cli.Validation;

namespace Kvq.Cli.Commands;

/// <summary>--offload-budget: attention reads only the blocks a per-block key bound picks (every token stays; docs/offload.md).
/// In kvq eval it is repeatable, and each budget adds a row per --kv spec beside the --policy rows.</summary>
public sealed class KvOffloadOptions(bool grid)
{
    public Option<string[]> Budget { get; } = new("--offload-budget")
    {
        Description = (grid ? "repeatable; each adds a row per --kv spec: " : "") +
                      "read only the top blocks by an estimate of their softmax mass from per-block key boxes, per layer, KV head and step (sinks and the recent " +
                      "32 tokens always): a fraction of the blocks (25% or 0.25), a block count (16), or 'full' (every block, for checking); " +
                      "options after a colon: recent=N, sink=N, box=N, rule=mass|total|bound, spread=P, cover=P, dense=N (docs/offload.md)",
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<string?> Dir { get; } = new("--offload-dir")
    {
        Description = "the file tier: keep the cache's blocks in memory-mapped temporary files in this folder (deleted at exit) instead of RAM",
    };

    public void AddTo(Command cmd)
    {
        cmd.Add(Budget);
        cmd.Add(Dir);
    }

    /// <summary>--offload-dir applied to a config, probed for writing first: a file in the way or a read-only folder
    /// was an unhandled IOException with a stack trace when the cache made its first block file.</summary>
    public KvCacheConfig WithDir(ParseResult r, KvCacheConfig config)
    {
        if (r.GetValue(Dir) is not { } dir) return config;
        OutputFile.CheckFolder("--offload-dir", dir);
        return config with { BlockDirectory = Path.GetFullPath(dir) };
    }

    /// <summary>The budgets given (checked: a bad one is a <see cref="KvSpecException"/>, exit code 2).</summary>
    public IReadOnlyList<KvOffloadBudget> Parse(ParseResult r)
    {
        var list = (r.GetValue(Budget) ?? []).Select(KvOffloadBudget.Parse).ToList();
        if (!grid && list.Count > 1) throw new CliException("--offload-budget: give one");
        return list;
    }
}
