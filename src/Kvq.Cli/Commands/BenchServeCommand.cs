using System.CommandLine;
using System.Globalization;
using Kvq.Bench.Serving;
using Kvq.Cli.Commands.Eval;
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
        var requests = new Option<int>("--requests", "-n") { Description = "requests to send", DefaultValueFactory = _ => 32 };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "prompt length in tokens", DefaultValueFactory = _ => 2000 };
        var outputTokens = new Option<int>("--output-tokens") { Description = "tokens each request generates", DefaultValueFactory = _ => 200 };
        var spread = new Option<double>("--length-spread") { Description = "lengths uniform in [L(1-s), L(1+s)], seeded (0: fixed)" };
        var shared = new Option<double>("--shared-prefix") { Description = "share of each prompt that is the same in every request (0..1)" };
        var concurrency = new Option<string>("--concurrency", "-C") { Description = "closed-loop clients; a list gives one row each, e.g. 1,8,32", DefaultValueFactory = _ => "32" };
        var rate = new Option<double?>("--rate") { Description = "open loop instead: Poisson arrivals, requests per second" };
        var seed = new Option<int>("--seed") { Description = "seed of lengths and arrivals", DefaultValueFactory = _ => 1 };
        var noPrefix = new Option<bool>("--no-prefix-cache") { Description = "turn the prefix cache off" };
        var maxRunning = new Option<int>("--max-running") { Description = "sequences in flight at most", DefaultValueFactory = _ => 256 };
        var step = new Option<int>("--step-tokens") { Description = "tokens per step (decode tokens + prompt chunks)", DefaultValueFactory = _ => 256 };
        var text = new Option<string?>("--text") { Description = "text the prompts are cut from (default: ../shared/text/books/pg2489_moby_dick.txt)" };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var report = new Option<string?>("--report") { Description = "folder for rows.jsonl and plots of throughput and latency against concurrency" };
        var cmd = new Command("serve", "load-test the serving engine: many requests over one compressed KV budget")
        {
            model, kv, profile, sink, budget, requests, promptTokens, outputTokens, spread, shared, concurrency, rate, seed, noPrefix,
            maxRunning, step, text, threads, json, report,
        };
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            long kvBudget = ParseBudget(r.GetValue(budget)!);
            int n = Positive("--requests", r.GetValue(requests));
            int pt = Positive("--prompt-tokens", r.GetValue(promptTokens));
            int ot = Positive("--output-tokens", r.GetValue(outputTokens));
            double sp = r.GetValue(spread), sh = r.GetValue(shared);
            if (!(sp >= 0 && sp < 1)) throw new CliException($"--length-spread must be in [0, 1) (got {sp})");
            if (!(sh >= 0 && sh <= 1)) throw new CliException($"--shared-prefix must be in [0, 1] (got {sh})");
            var clients = ListArgument.Ints("--concurrency", r.GetValue(concurrency), 1);
            if (r.GetValue(rate) is { } q && !(q > 0 && double.IsFinite(q))) throw new CliException($"--rate must be a positive number (got {q})");
            int th = r.GetValue(threads);
            if (th < 1 || th > 4 * Environment.ProcessorCount) throw new CliException($"--threads must be in 1..{4 * Environment.ProcessorCount} (got {th})");
            int stepTokens = r.GetValue(step);
            if (stepTokens < 16) throw new CliException($"--step-tokens must be at least 16 (got {stepTokens})");

            var path = DefaultPaths.ResolveModel(r.GetValue(model));
            using var loaded = ModelLoader.Load(path);
            var prof = KvProfileOptions.Load(r.GetValue(profile), loaded.Weights.Fingerprint);
            var specs = r.GetValue(kv)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            if (specs.Length == 0) throw new CliException("--kv: no KV spec given");
            var configs = specs.Select(s => KvProfileOptions.Config(s, prof, r.GetValue(sink))).ToArray();
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
                    ArrivalRate = r.GetValue(rate), Seed = r.GetValue(seed),
                };
                IReadOnlyList<ServeRequest> list;
                try { list = workload.Build(tokens, loaded.Tokenizer.AddBos ? loaded.Tokenizer.BosId : -1); }
                catch (ArgumentException e) { throw new CliException($"--text: {e.Message}"); }
                foreach (var config in configs)
                {
                    var options = new EngineOptions
                    {
                        Kv = config, KvBudgetBytes = kvBudget, MaxRunning = r.GetValue(maxRunning), PrefixCache = !r.GetValue(noPrefix),
                        StepTokens = stepTokens,
                    };
                    ServeBenchResult row;
                    try
                    {
                        row = Progress.Run($"serve {config.Name}, {c} clients", report => ServeBenchmark.Run(model1, loaded.Tokenizer, name, options,
                            workload, list, new Progress<int>(done => report(done, n))).GetAwaiter().GetResult());
                    }
                    catch (EngineRequestException e) { throw new CliException($"{config.Name}: {e.Message}"); }
                    rows.Add(row);
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

    private static int Positive(string option, int value) =>
        value >= 1 ? value : throw new CliException($"{option} must be at least 1 (got {value})");

    private static void Print(List<ServeBenchResult> rows, ILanguageModel model)
    {
        var f = CultureInfo.InvariantCulture;
        Console.WriteLine($"{rows[0].Model} on {model.Device}; {rows[0].Workload}; KV budget {Bytes.Format(rows[0].KvBudgetBytes)}; {rows[0].Machine}");
        Console.WriteLine("| kv | clients | completed | max running | output tok/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | peak KV | preemptions | prefix hits |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var x in rows)
            Console.WriteLine(string.Create(f, $"| {x.Kv} | {x.Concurrency} | {x.Completed}/{x.Requests} | {x.MaxRunning} | {x.OutputTokS:F1} | " +
                $"{x.TtftP50Ms:F0} / {x.TtftP99Ms:F0} | {x.ItlP50Ms:F1} / {x.ItlP99Ms:F1} | {Bytes.Format(x.PeakKvBytes)} | {x.Preemptions} | {x.PrefixHitRate:P0} |"));
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
