using System.CommandLine;
using System.Globalization;
using Kvq.Bench.Serving;
using Kvq.Cli.Commands.Eval;
using Kvq.Cli.Validation;
using Kvq.IO;
using Kvq.Model;
using Kvq.Serving;
using Kvq.Tensors;
using Kvq.Text;

namespace Kvq.Cli.Commands;

/// <summary>
/// kvq bench serve: an in-process load test of the serving engine: N requests cut from real text, closed loop with C
/// clients (or Poisson arrivals), one row per (--kv spec, concurrency) with throughput, time to first token,
/// inter-token latency, the most sequences running at once and peak KV bytes under the budget. The llama.cpp peer
/// at the same budget is bench/Kvq.Bench --mode serve (src/ never references llama.cpp).
/// </summary>
public static class BenchServeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var kv = new Option<string>("--kv") { Description = "comma-separated KV specs, one row each (e.g. f16,nuq3-1%)", DefaultValueFactory = _ => "f16" };
        var profile = KvProfileOptions.Profile();
        var sink = KvProfileOptions.Sink();
        var budget = new Option<string>("--kv-budget") { Description = "bytes the KV cache may hold, e.g. 64MiB, 2GiB", DefaultValueFactory = _ => "64MiB" };
        var requests = CheckedOption.Int("--requests", "requests to send", 32, ValueRange.Between(1, 1_000_000), null, "-n");
        var promptTokens = CheckedOption.Int("--prompt-tokens", "prompt length in tokens", 2000, ValueRange.AtLeast(1));
        var outputTokens = CheckedOption.Int("--output-tokens", "tokens each request generates", 200, ValueRange.AtLeast(1));
        var spread = CheckedOption.Float("--length-spread", "lengths uniform in [L(1-s), L(1+s)], seeded (0: fixed)", 0, ValueRange.Between(0, 0.99));
        var shared = CheckedOption.Float("--shared-prefix", "share of each prompt that is the same in every request", 0, ValueRange.Between(0, 1));
        var concurrency = new Option<string>("--concurrency", "-C") { Description = "closed-loop clients; a list gives one row each, e.g. 1,8,32", DefaultValueFactory = _ => "32" };
        var rate = CheckedOption.Float("--rate", "open loop instead: Poisson arrivals, requests per second (0: closed loop)", 0, ValueRange.AtLeast(0));
        var seed = CheckedOption.Int("--seed", "seed of lengths and arrivals", 1, ValueRange.AtLeast(0));
        var noPrefix = new Option<bool>("--no-prefix-cache") { Description = "turn the prefix cache off" };
        var maxRunning = CheckedOption.Int("--max-running", "sequences in flight at most", 256, ValueRange.Between(1, 65536));
        var step = CheckedOption.Int("--step-tokens", "tokens per step (decode tokens + prompt chunks)", 256, ValueRange.Between(16, 65536));
        var text = new Option<string?>("--text") { Description = "text the prompts are cut from (default: ../shared/text/books/pg2489_moby_dick.txt)" };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var report = new Option<string?>("--report") { Description = "folder for rows.jsonl and plots of throughput and latency against concurrency" };
        var policies = new KvPolicyOptions(grid: true);
        var tierOptions = new KvTierOptions();
        var cmd = new Command("serve", "load-test the serving engine: many requests over one compressed KV budget")
        {
            model, kv, profile, sink, budget, requests, promptTokens, outputTokens, spread, shared, concurrency, rate, seed, noPrefix,
            maxRunning, step, text, threads, json, report,
        };
        policies.AddTo(cmd);
        tierOptions.AddTo(cmd);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var policyList = policies.Parse(r);
            var tiers = tierOptions.Parse(r, policyList.Any(p => p != null), prefixCache: !r.GetValue(noPrefix));
            if (r.GetValue(report) is { } reportDir)
            {
                PlotSupport.Ensure("--report");
                OutputFile.CheckFolder("--report", reportDir);   // before the benchmark, not after it
            }
            long kvBudget = ParseBudget(r.GetValue(budget)!);
            int n = r.GetValue(requests), pt = r.GetValue(promptTokens), ot = r.GetValue(outputTokens);
            double sp = r.GetValue(spread), sh = r.GetValue(shared);
            double? arrivals = r.GetValue(rate) is > 0 and var q ? q : null;
            var clients = ListArgument.Ints("--concurrency", r.GetValue(concurrency), 1);
            int th = r.GetValue(threads), stepTokens = r.GetValue(step);

            var path = DefaultPaths.ResolveModel(r.GetValue(model));
            using var loaded = ModelLoader.Load(path);
            var prof = KvProfileOptions.Load(r.GetValue(profile), loaded.Weights.Fingerprint);
            var specs = r.GetValue(kv)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            if (specs.Length == 0) throw new CliException("--kv: no KV spec given");
            var configs = specs.SelectMany(s => policyList.Select(p => KvProfileOptions.Config(s, prof, r.GetValue(sink), contextTokens: loaded.Weights.Config.ContextLength) with { Policy = p })).ToArray();
            int ctx = loaded.Weights.Config.ContextLength;
            if (pt * (1 + sp) + ot * (1 + sp) > ctx)
                throw new CliException($"--prompt-tokens {pt} + --output-tokens {ot} (with spread {sp}) pass the model's context of {ctx} tokens");
            var textPath = r.GetValue(text) ?? DefaultPaths.ResolveText(Path.Combine("books", "pg2489_moby_dick.txt"));
            if (!File.Exists(textPath)) throw new CliException($"--text: '{textPath}' not found");
            var tokens = loaded.Tokenizer.Encode(TextNormalizer.ReadNormalized(textPath), addBos: false);
            var name = Path.GetFileName(path);
            var rows = new List<ServeBenchResult>();
            var model1 = new Transformer(loaded.Weights, new Parallelism(th), stepTokens);
            foreach (var c in clients)
            {
                var workload = new ServeWorkload
                {
                    Requests = n, PromptTokens = pt, OutputTokens = ot, LengthSpread = sp, SharedPrefix = sh, Concurrency = c,
                    ArrivalRate = arrivals, Seed = r.GetValue(seed),
                };
                IReadOnlyList<ServeRequest> list;
                try { list = workload.Build(tokens, loaded.Tokenizer.AddBos ? loaded.Tokenizer.BosId : -1); }
                catch (ArgumentException e) { throw new CliException($"--text: {e.Message}"); }
                foreach (var config in configs)
                {
                    var options = tiers(new EngineOptions
                    {
                        Kv = config, KvBudgetBytes = kvBudget, MaxRunning = r.GetValue(maxRunning), PrefixCache = !r.GetValue(noPrefix),
                        StepTokens = stepTokens,
                    });
                    ServeBenchResult row;
                    try
                    {
                        row = Progress.Run($"serve {config.Name}, {c} clients", report => ServeBenchmark.Run(model1, loaded.Tokenizer, name, options,
                            workload, list, new Progress<int>(done => report(done, n))).GetAwaiter().GetResult());
                    }
                    catch (EngineRequestException e) when (e.Code == KvPool.BudgetTooLargeCode)
                    {
                        throw EngineSetup.BudgetTooLarge(r.GetValue(budget)!, config.BlockTokens);
                    }
                    catch (EngineRequestException e) { throw new CliException($"{config.Name}: {e.Message}"); }
                    catch (Cache.KvSpecException e) { throw new CliException($"{config.Name}: {e.Message}"); }
                    // No request finished: a row of NaN and 0 tok/s measured nothing (a prompt over the --kv-budget
                    // failed every request and printed such a row, exit code 1); the engine's refusal is the one line.
                    if (row.Completed == 0 && row.Failed > 0)
                        throw new CliException($"{config.Name}, {c} clients: every request failed, so nothing was measured: {row.FirstError}");
                    rows.Add(row);
                    if (row.Failed > 0)
                        Console.Error.WriteLine($"kvq: {config.Name}, {c} clients: {row.Failed} of {row.Requests} requests failed; the first: {row.FirstError}");
                    if (r.GetValue(json)) Console.WriteLine(CliJson.Line(row));
                }
            }
            if (!r.GetValue(json)) Print(rows, model1);
            if (r.GetValue(report) is { } dir) Report(dir, rows);
            return rows.All(x => x.Failed == 0) ? 0 : 1;
        }));
        return cmd;
    }

    private static long ParseBudget(string text)
    {
        try { return Bytes.Parse(text); }
        catch (FormatException e) { throw new CliException($"--kv-budget: {e.Message}"); }
    }

    private static void Print(List<ServeBenchResult> rows, ILanguageModel model)
    {
        var f = CultureInfo.InvariantCulture;
        // The workload as run: the first row's names its own concurrency only ("1 concurrent clients" over -C 1,8,32).
        var levels = rows.Select(x => x.Concurrency).Distinct().ToList();
        var workload = levels.Count == 1 ? rows[0].Workload
            : rows[0].Workload.Replace($"{rows[0].Concurrency} concurrent clients", $"{string.Join(",", levels)} concurrent clients", StringComparison.Ordinal);
        Console.WriteLine($"{rows[0].Model} on {model.Device}; {workload}; KV budget {Bytes.Format(rows[0].KvBudgetBytes)}; {rows[0].Machine}");
        Console.WriteLine("| kv | clients | completed | max running | output tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | peak KV | mean running | KV per running | KV B/token | held / unshared | preemptions | prefix hits |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var x in rows)
            Console.WriteLine(string.Create(f, $"| {x.Kv} | {x.Concurrency} | {x.Completed}/{x.Requests} | {x.MaxRunning} | {x.OutputTokS:F1} | " +
                $"{x.TtftP50Ms:F0} / {x.TtftP99Ms:F0} | {x.ItlP50Ms:F1} / {x.ItlP99Ms:F1} | {Bytes.Format(x.PeakKvBytes)} | {x.MeanRunning:F1} | {Bytes.Format(x.KvHeldPerRunningBytes)} | {x.KvHeldPerTokenBytes:F0} | {x.KvHeldVsUnshared:F2} | {x.Preemptions} | {x.PrefixHitRate:P0} |"));
        // Under --preemption swap, once something was swapped: where the preempted requests went.
        if (!rows.Any(x => x.SwapOutHost + x.SwapOutFile + x.SwapRecomputes > 0)) return;
        Console.WriteLine();
        Console.WriteLine("| kv | clients | preemptions | swapped to host | swapped to files | back from host / files | recomputed |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
        foreach (var x in rows)
            Console.WriteLine($"| {x.Kv} | {x.Concurrency} | {x.Preemptions} | {x.SwapOutHost} ({Bytes.Format(x.SwapOutHostBytes)}) | " +
                              $"{x.SwapOutFile} ({Bytes.Format(x.SwapOutFileBytes)}) | {x.SwapInHost} / {x.SwapInFile} | {x.SwapRecomputes} |");
    }

    private static void Report(string dir, List<ServeBenchResult> rows)
    {
        Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(Path.Combine(dir, "rows.jsonl"), string.Concat(rows.Select(x => CliJson.Line(x) + "\n")));
        var byKv = rows.GroupBy(x => x.Kv).ToList();
        (string, double[], double[]) Series(IGrouping<string, ServeBenchResult> g, Func<ServeBenchResult, double> y) =>
            (g.Key, g.Select(x => (double)x.Concurrency).ToArray(), g.Select(y).ToArray());
        EvalPlots.Lines(Path.Combine(dir, "throughput.png"), $"Output tokens per second ({rows[0].Model}, KV budget {Bytes.Format(rows[0].KvBudgetBytes)})",
            "concurrent clients", "output tok/s", byKv.Select(g => Series(g, x => x.OutputTokS)).ToList(), log2X: true);
        EvalPlots.Lines(Path.Combine(dir, "ttft.png"), "Time to first token, p50", "concurrent clients", "ms",
            byKv.Select(g => Series(g, x => x.TtftP50Ms)).ToList(), log2X: true);
        EvalPlots.Lines(Path.Combine(dir, "itl.png"), "Inter-token latency, p50", "concurrent clients", "ms",
            byKv.Select(g => Series(g, x => x.ItlP50Ms)).ToList(), log2X: true);
        Console.Error.WriteLine($"report: {dir}/rows.jsonl, throughput.png, ttft.png, itl.png");
    }
}
