using System.CommandLine;
using Kvq.Cli.Validation;
using Kvq.Eval;

namespace Kvq.Cli.Commands.Eval;

/// <summary>kvq eval recall: perplexity of a passage's second copy after filler, per filler length and KV spec.</summary>
public static class RecallCommand
{
    public static Command Create()
    {
        var o = new EvalOptions(defaultKv: "f16,q8_0,q4_0");
        var passage = CheckedOption.Int("--passage", "passage length in tokens", 200, ValueRange.Between(1, int.MaxValue));
        var filler = new Option<string>("--filler") { Description = "comma-separated filler lengths in tokens (other text of the book between the copies)", DefaultValueFactory = _ => "500,1000,1500" };
        var samples = CheckedOption.Int("--samples", "passages (random positions) averaged per filler length", 4, ValueRange.Between(1, int.MaxValue));
        var seed = CheckedOption.Int("--seed", "seed for the passage and filler positions", 1, ValueRange.Between(0, int.MaxValue));
        var cmd = new Command("recall", "copy recall: perplexity of a passage's second copy after F tokens of other text (and of its first copy)");
        o.AddTo(cmd);
        cmd.Add(passage);
        cmd.Add(filler);
        cmd.Add(samples);
        cmd.Add(seed);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            int p = r.GetValue(passage), n = r.GetValue(samples), sd = r.GetValue(seed);
            if (p < 1) throw new CliException($"--passage {p}: need at least 1 token");
            if (n < 1) throw new CliException($"--samples {n}: need at least 1");
            var fillers = ListArgument.Ints("--filler", r.GetValue(filler), min: 0);
            using var run = EvalRun.Open("recall", r, o, readText: true);
            int longest = 1 + 2 * p + fillers.Max(), ctxMax = run.Model.Config.ContextLength;
            if (longest > ctxMax)
                throw new CliException($"--passage {p} x 2 + --filler {fillers.Max()} + BOS = {longest} tokens is longer than the model's context ({ctxMax})");
            if (run.TextTokens.Length < p + fillers.Max() + CopyRecallSample.MinGap)
                throw new CliException($"the text is too short ({run.TextTokens.Length} tokens in {run.TextPath}) for a passage of {p} and filler of " +
                                       $"{fillers.Max()} tokens {CopyRecallSample.MinGap} tokens apart");
            run.Settings.Add(("passage", p.ToString()));
            run.Settings.Add(("filler", string.Join(',', fillers)));
            run.Settings.Add(("samples", n.ToString()));
            run.Settings.Add(("seed", sd.ToString()));
            var table = Table();
            run.Output.Header(run.HeaderLine());
            run.Output.Markdown(table.HeaderLines());
            var evaluator = new CopyRecallEvaluator(run.Model, run.Loaded.Tokenizer.BosId);
            var rows = new List<CopyRecallResult>();
            foreach (var config in run.Configs)
            {
                var res = run.Measure($"recall {config.Name}", (pr, cancel) => evaluator.Evaluate(run.TextTokens, config, p, fillers, n, sd, pr, cancel));
                if (res == null) break;
                foreach (var row in res)
                {
                    rows.Add(row);
                    run.Output.Row(row, table);
                }
            }
            var model = Path.GetFileName(run.ModelPath);
            run.Output.Plot("recall_vs_filler.png", "second-copy perplexity vs filler length, one line per KV spec (lower = better recall)", path =>
                EvalPlots.Lines(path, $"Copy recall: second-copy perplexity ({model}, passage {p})", "filler tokens between the copies",
                    "second-copy perplexity (log scale)", Series(rows, x => x.SecondCopyPpl), logY: true));
            run.Output.Plot("recall_vs_bits.png", $"second-copy perplexity at the longest filler ({fillers.Max()} tokens) vs stored bits per element", path =>
                EvalPlots.LabeledPoints(path, $"Second-copy perplexity after {fillers.Max()} tokens vs bits per element", "bits per element",
                    "second-copy perplexity (log scale)", rows.Where(x => x.FillerTokens == fillers.Max()).Select(x => (x.Kv, x.BitsPerElement, x.SecondCopyPpl)).ToList(), logY: true));
            if (PolicyGrouping.HasPolicies(run.Configs))
                foreach (int f in fillers)
                {
                    var (policies, series) = PolicyGrouping.Group(run.Configs, rows.Where(x => x.FillerTokens == f), x => x.Kv, x => x.SecondCopyPpl);
                    double firstCopy = rows.Where(x => x.FillerTokens == f).Select(x => x.FirstCopyPpl).DefaultIfEmpty(double.NaN).Average();
                    run.Output.Plot($"recall_by_policy_{f}.png", $"second-copy perplexity after {f} filler tokens per token policy and KV format (lower = better recall; dashed: first copy, nothing recalled)", path =>
                        EvalPlots.GroupedBars(path, $"Copy recall after {f} filler tokens ({model}, passage {p})", "second-copy perplexity", policies, series,
                            reference: ("first copy (mean)", firstCopy)));
                }
            return run.Finish();
        }));
        return cmd;
    }

    private static List<(string, double[], double[])> Series(List<CopyRecallResult> rows, Func<CopyRecallResult, double> y) =>
        rows.GroupBy(x => x.Kv).Select(g => (g.Key, g.Select(x => (double)x.FillerTokens).ToArray(), g.Select(y).ToArray())).ToList();

    private static MarkdownTable<CopyRecallResult> Table() => new MarkdownTable<CopyRecallResult>()
        .Left("kv", x => x.Kv)
        .Right("filler", x => x.FillerTokens.ToString())
        .Right("2nd copy ppl", x => MarkdownTable<CopyRecallResult>.F(x.SecondCopyPpl, 3))
        .Right("1st copy ppl", x => MarkdownTable<CopyRecallResult>.F(x.FirstCopyPpl, 2))
        .Right("samples", x => x.Samples.ToString())
        .Right("tokens/copy", x => x.Tokens.ToString())
        .Right("bits/element", x => MarkdownTable<CopyRecallResult>.F(x.BitsPerElement, 2));
}
