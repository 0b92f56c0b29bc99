using System.CommandLine;
using Kvq.Serving;

namespace Kvq.Cli.Commands;

/// <summary>
/// The engine's tiers behind the KV pool (issue 20 item 6), for serve, chat and bench serve: preemption by swapping
/// with a host budget and a file tier behind it, and a disk tier for cold prompt prefixes. <see cref="Parse"/> checks
/// the values (one line naming the option, exit code 2), probes the folders the files go to (a folder that cannot take
/// files is refused at start, like every other output) and sets them on the engine's options.
/// </summary>
public sealed class KvTierOptions
{
    public Option<string> Preemption { get; } = new("--preemption")
    {
        Description = "what preemption does with a request's KV: recompute (drop it, run the tokens again) or swap (copy the compressed blocks to host memory, then files, and back)",
        DefaultValueFactory = _ => "recompute",
    };
    public Option<string?> SwapBudget { get; } = new("--swap-budget")
    {
        Description = "with --preemption swap: host memory for swapped requests (e.g. 1GiB; 0: none, all to --swap-disk; default: no limit)",
    };
    public Option<string?> SwapDisk { get; } = new("--swap-disk")
    {
        Description = "with --preemption swap: bytes of files for swapped requests once --swap-budget is full (e.g. 8GiB); what fits neither is recomputed",
    };
    public Option<string?> SwapDir { get; } = new("--swap-dir")
    {
        Description = "folder for --swap-disk's files (an own subfolder, removed at exit; swap files a killed kvq left there are removed at start; default: the system's temporary folder)",
    };
    public Option<string?> DiskPrefixCache { get; } = new("--disk-prefix-cache")
    {
        Description = "bytes of files for cached prompt prefixes that the KV pool (and --host-prefix-cache) evict: read back instead of recomputed",
    };
    public Option<string?> DiskPrefixDir { get; } = new("--disk-prefix-dir")
    {
        Description = "folder for --disk-prefix-cache's files (an own subfolder, removed at exit; block files a killed kvq left there are removed at start; default: the system's temporary folder)",
    };

    public void AddTo(Command cmd)
    {
        foreach (var o in new Option[] { Preemption, SwapBudget, SwapDisk, SwapDir, DiskPrefixCache, DiskPrefixDir }) cmd.Add(o);
    }

    /// <summary>Checks the values (before any model work) and returns what sets them on an engine's options.
    /// <paramref name="policy"/>: whether a token policy runs (its preemption recomputes, its prefixes stay in the pool);
    /// <paramref name="prefixCache"/>: whether the prefix cache is on.</summary>
    /// <exception cref="CliException">A bad value or a combination that cannot work, named.</exception>
    public Func<EngineOptions, EngineOptions> Parse(ParseResult r, bool policy, bool prefixCache = true)
    {
        var mode = r.GetValue(Preemption)!.Trim().ToLowerInvariant() switch
        {
            "recompute" => PreemptionMode.Recompute,
            "swap" => PreemptionMode.Swap,
            var other => throw new CliException($"--preemption {other}: expected recompute or swap"),
        };
        long? swapHost = Size(r, SwapBudget, allowZero: true);
        long swapDisk = Size(r, SwapDisk, allowZero: false) ?? 0;
        long prefixDisk = Size(r, DiskPrefixCache, allowZero: false) ?? 0;
        var swapDir = Folder(r, SwapDir);
        var prefixDir = Folder(r, DiskPrefixDir);
        if (mode != PreemptionMode.Swap && (swapHost != null || swapDisk > 0 || swapDir != null))
            throw new CliException("--swap-budget, --swap-disk and --swap-dir need --preemption swap");
        if (mode == PreemptionMode.Swap && policy)
            throw new CliException("--preemption swap: under a token policy preemption recomputes (the policy's state follows its chunks)");
        if (swapHost == 0 && swapDisk == 0) throw new CliException("--swap-budget 0 keeps nothing in host memory: give --swap-disk SIZE for the files");
        if (swapDir != null && swapDisk == 0) throw new CliException("--swap-dir: give --swap-disk SIZE too");
        if (prefixDisk > 0 && policy)
            throw new CliException("--disk-prefix-cache: prefixes under a token policy are shared in the KV pool only (no disk tier yet)");
        if (prefixDisk > 0 && !prefixCache) throw new CliException("--disk-prefix-cache needs the prefix cache (drop --no-prefix-cache)");
        if (prefixDir != null && prefixDisk == 0) throw new CliException("--disk-prefix-dir: give --disk-prefix-cache SIZE too");
        // Now, like every other output: a folder that cannot take files would only show when the first request is
        // swapped or the first prefix evicted (and then quietly recompute every time).
        if (swapDisk > 0) Validation.OutputFile.CheckFolder("--swap-dir", swapDir ?? Path.GetTempPath());
        if (prefixDisk > 0) Validation.OutputFile.CheckFolder("--disk-prefix-dir", prefixDir ?? Path.GetTempPath());
        return options => options with
        {
            Preemption = mode,
            SwapHostBytes = swapHost,
            SwapFileBytes = swapDisk,
            SwapDirectory = swapDir,
            PrefixDiskBytes = prefixDisk,
            PrefixDiskDirectory = prefixDir,
        };
    }

    private static long? Size(ParseResult r, Option<string?> option, bool allowZero)
    {
        if (r.GetValue(option) is not { } text) return null;
        if (allowZero && text.Trim() == "0") return 0;
        try { return Bytes.Parse(text); }
        catch (FormatException e) { throw new CliException($"{option.Name}: {e.Message}"); }
    }

    private static string? Folder(ParseResult r, Option<string?> option) =>
        r.GetValue(option) is { } dir && !string.IsNullOrWhiteSpace(dir) ? dir
        : r.GetValue(option) is null ? null : throw new CliException($"{option.Name}: give a folder (got an empty name)");
}
