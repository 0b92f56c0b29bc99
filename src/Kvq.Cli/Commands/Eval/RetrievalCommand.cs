using System.CommandLine;
using System.Globalization;
using Kvq.Cli.Validation;
using Kvq.Eval;

namespace Kvq.Cli.Commands.Eval;

/// <summary>
/// The shared body of `kvq eval passkey` and `kvq eval needle`: prompts built once for trials x lengths x depths, each
/// KV spec answers all of them greedily, and the exact-match rate is printed as a depth x length matrix per spec.
/// </summary>
internal static class RetrievalCommand
{
    public static Command Create(string name, string description, bool readText, string defaultLengths,
        Func<EvalRun, IRetrievalTask> createTask)
    {
        var o = new EvalOptions(defaultKv: "f16,q8_0,q4_0", text: readText);
        var lengths = new Option<string>("--lengths") { Description = "comma-separated prompt lengths in tokens (each prompt is the longest that fits)", DefaultValueFactory = _ => defaultLengths };
        var depths = new Option<string>("--depths") { Description = "comma-separated needle depths, 0 (start) .. 1 (just before the question)", DefaultValueFactory = _ => "0,0.25,0.5,0.75,1" };
        var trials = CheckedOption.Int("--trials", "trials per (length, depth), each with its own key and text position", 3, ValueRange.Between(1, int.MaxValue));
        var seed = CheckedOption.Int("--seed", "seed for keys and text positions", 1, ValueRange.Between(0, int.MaxValue));
        var cmd = new Command(name, description);
        o.AddTo(cmd);
        cmd.Add(lengths);
        cmd.Add(depths);
        cmd.Add(trials);
        cmd.Add(seed);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var ls = ListArgument.Ints("--lengths", r.GetValue(lengths), min: 1);
            var ds = ListArgument.Fractions("--depths", r.GetValue(depths));
            int n = r.GetValue(trials), sd = r.GetValue(seed);
            if (n < 1) throw new CliException($"--trials {n}: need at least 1");
            using var run = EvalRun.Open(name, r, o, readText, tokenize: false);
            var task = createTask(run);
            int ctxMax = run.Model.Config.ContextLength;
            foreach (int l in ls)
                if (l + task.MaxNewTokens > ctxMax)
                    throw new CliException($"--lengths {l}: with {task.MaxNewTokens} answer tokens it is longer than the model's context ({ctxMax})");
            run.Settings.Add(("lengths", string.Join(',', ls)));
            run.Settings.Add(("depths", string.Join(',', ds.Select(d => d.ToString(CultureInfo.InvariantCulture)))));
            run.Settings.Add(("trials", n.ToString()));
            run.Settings.Add(("seed", sd.ToString()));
            run.Settings.Add(("answer", $"greedy, {task.MaxNewTokens} tokens, exact match"));
            var prompts = Progress.Run($"{name} prompts", p =>
            {
                p(0, 1);
                var all = RetrievalEvaluator.BuildPrompts(task, ls, ds, n, sd, ctxMax);
                p(1, 1);
                return all;
            });
            run.Output.Header(run.HeaderLine());
            var evaluator = new RetrievalEvaluator(run.Model, run.Loaded.Tokenizer);
            var summary = new List<(string Kv, int Correct, int Trials, double Prefix, double Bits)>();
            var matrices = new List<(string Kv, IReadOnlyList<RetrievalCell> Cells)>();
            foreach (var config in run.Configs)
            {
                var done = run.Measure($"{name} {config.Name}", (p, cancel) => evaluator.Evaluate(task, prompts, config, p, cancel));
                if (done == null || done.Count == 0) break;
                foreach (var t in done) run.Output.Detail("trials.jsonl", t);
                var cells = RetrievalEvaluator.Summarize(done);
                foreach (var c in cells) run.Output.Row(c);
                int correct = done.Count(t => t.Correct);
                double bits = done.Average(t => t.BitsPerElement);
                summary.Add((config.Name, correct, done.Count, done.Average(t => t.PrefixMatch), bits));
                matrices.Add((config.Name, cells));
                run.Output.Markdown("");
                run.Output.Markdown($"### {name} {config.Name}: exact match {correct}/{done.Count} ({100.0 * correct / done.Count:F1}%), " +
                                    $"answer prefix matched {100 * summary[^1].Prefix:F1}%, {bits:F2} bits/element; rows depth, columns length in tokens");
                run.Output.Markdown("");
                run.Output.Markdown(Matrix(cells, ls, ds));
            }
            if (summary.Count > 0)
            {
                run.Output.Markdown("");
                run.Output.Markdown($"### {name}: all lengths and depths");
                run.Output.Markdown("");
                run.Output.Markdown("| kv | exact match | correct | trials | answer prefix matched | bits/element |");
                run.Output.Markdown("|---|---:|---:|---:|---:|---:|");
                foreach (var s in summary)
                    run.Output.Markdown($"| {s.Kv} | {100.0 * s.Correct / s.Trials:F1}% | {s.Correct} | {s.Trials} | {100 * s.Prefix:F1}% | {s.Bits:F2} |");
                if (summary.All(s => s.Correct == 0))
                {
                    string hint = NoneCorrectHint(name, Path.GetFileName(run.ModelPath));
                    Console.Error.WriteLine($"kvq: note: {hint}");
                    run.Output.Markdown("");
                    run.Output.Markdown($"Note: {hint}");
                }
            }
            foreach (var (kv, cells) in matrices)
            {
                var file = $"{name}_{FileSafe(kv)}.png";
                run.Output.Plot(file, $"{name} exact-match rate, {kv} cache: depth x length", path =>
                {
                    var values = new double[ds.Length, ls.Length];
                    for (int i = 0; i < ds.Length; i++)
                        for (int j = 0; j < ls.Length; j++)
                            values[i, j] = cells.FirstOrDefault(c => c.Depth == ds[i] && c.Length == ls[j])?.Accuracy ?? double.NaN;
                    EvalPlots.Heatmap(path, $"{name}: exact match, {kv} cache ({Path.GetFileName(run.ModelPath)})", "prompt length (tokens)",
                        "needle depth", ls.Select(l => l.ToString(CultureInfo.InvariantCulture)).ToArray(),
                        ds.Select(d => d.ToString("0.##", CultureInfo.InvariantCulture)).ToArray(), values);
                });
            }
            run.Output.Plot($"{name}_vs_bits.png", $"{name} exact-match rate over all lengths and depths vs stored bits per element", path =>
                EvalPlots.LabeledPoints(path, $"{name}: exact match vs bits per element", "bits per element", "exact-match rate",
                    summary.Select(s => (s.Kv, s.Bits, s.Correct / (double)s.Trials)).ToList()));
            return run.Finish();
        }));
        return cmd;
    }

    /// <summary>Depth x length matrix of exact-match rates (with a last row over all depths).</summary>
    private static IEnumerable<string> Matrix(IReadOnlyList<RetrievalCell> cells, int[] lengths, double[] depths)
    {
        yield return "| depth \\ length | " + string.Join(" | ", lengths) + " |";
        yield return "|---|" + string.Concat(lengths.Select(_ => "---:|"));
        string Cell(IEnumerable<RetrievalCell> cs)
        {
            var list = cs.ToList();
            int trials = list.Sum(c => c.Trials);
            return trials == 0 ? "-" : $"{list.Sum(c => c.Correct) / (double)trials:F2}";
        }
        foreach (double d in depths)
            yield return $"| {d.ToString(CultureInfo.InvariantCulture)} | " +
                         string.Join(" | ", lengths.Select(l => Cell(cells.Where(c => c.Depth == d && c.Length == l)))) + " |";
        yield return "| all | " + string.Join(" | ", lengths.Select(l => Cell(cells.Where(c => c.Length == l)))) + " |";
    }

    /// <summary>
    /// Why every format can score 0%: the model, not the cache. Said so that a 0% row is not read as a broken cache.
    /// </summary>
    internal static string NoneCorrectHint(string task, string model) =>
        $"no format answered any {task} prompt exactly, so 0% here says the model ({model}) cannot do this task at these " +
        "lengths, not that a cache lost the key: small models rarely retrieve a hidden key. The 'answer prefix matched' " +
        "column still compares the formats; 'kvq eval recall' (copying a passage the model has seen) separates them on " +
        "small models, and a larger instruction-tuned model gives passkey/needle scores that mean something.";

    private static string FileSafe(string kv) => kv.Replace('/', '-').Replace('%', 'p');
}
