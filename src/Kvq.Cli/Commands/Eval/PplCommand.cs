using System.CommandLine;
using Kvq.Cli.Validation;
using Kvq.Eval;

namespace Kvq.Cli.Commands.Eval;

/// <summary>kvq eval ppl: perplexity per KV spec over non-overlapping (or, with --stride, sliding) windows.</summary>
public static class PplCommand
{
    public static Command Create()
    {
        var o = new EvalOptions(defaultKv: "f16", textRequired: true);
        var ctx = CheckedOption.Int("--ctx", "window length in tokens (BOS + ctx-1 text tokens)", 512, ValueRange.Between(2, int.MaxValue), null, "-c");
        var windows = CheckedOption.Int("--windows", "windows to evaluate (0 = all)", 0, ValueRange.Between(0, int.MaxValue), "0 = all", "-w");
        var stride = CheckedOption.Int("--stride", "sliding windows: advance by S tokens and score only the last S positions of each (0 = non-overlapping, every position scored)", 0, ValueRange.Between(0, int.MaxValue), "0 = non-overlapping");
        var cmd = new Command("ppl", "perplexity over non-overlapping windows, the cache fresh for each window");
        o.AddTo(cmd);
        cmd.Add(ctx);
        cmd.Add(windows);
        cmd.Add(stride);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            int c = r.GetValue(ctx), s = r.GetValue(stride);
            if (s != 0) PerplexityWindows.CheckStride(c, s);
            using var run = EvalRun.Open("ppl", r, o, readText: true);
            run.CheckContext(c);
            int available = s == 0 ? PerplexityWindows.Count(run.TextTokens.Length, c) : PerplexityWindows.StridedCount(run.TextTokens.Length, c, s);
            if (available == 0)
                throw new CliException($"--ctx {c} is longer than the text ({run.TextTokens.Length} tokens in {run.TextPath})");
            int w = r.GetValue(windows);
            run.Settings.Add(("ctx", c.ToString()));
            if (s != 0) run.Settings.Add(("stride", s.ToString()));
            run.Settings.Add(("windows", (w <= 0 || w > available ? available : w).ToString()));
            bool kvquant = run.Configs.Any(x => x.Profile != null);
            var table = Table(kvquant);
            run.Output.Header(run.HeaderLine());
            run.Output.Markdown(table.HeaderLines());
            var evaluator = new PerplexityEvaluator(run.Model, run.Loaded.Tokenizer.BosId);
            var rows = new List<PerplexityResult>();
            foreach (var config in run.Configs)
            {
                var res = run.Measure($"ppl {config.Name}", (p, cancel) => evaluator.Evaluate(run.TextTokens, c, w, config, s, p, cancel));
                if (res == null) break;
                if (config.Profile != null)
                    res = res with { KvQuant = KvQuantColumns.Stats(config, run.Model.KvShape.HeadDim, run.Model.KvShape.Layers, res) };
                rows.Add(res);
                run.Output.Row(res, table);
            }
            run.Output.Plot("ppl_vs_bits.png", "perplexity vs stored bits per K/V element, one point per KV spec", path =>
                EvalPlots.LabeledPoints(path, $"Perplexity vs bits per element ({Path.GetFileName(run.ModelPath)}, ctx {c})",
                    "bits per element", "perplexity", rows.Select(x => (x.Kv, x.BitsPerElement, x.Ppl)).ToList()));
            if (PolicyGrouping.HasPolicies(run.Configs))
            {
                var (policies, series) = PolicyGrouping.Group(run.Configs, rows, x => x.Kv, x => x.Ppl);
                run.Output.Plot("ppl_by_policy.png", "perplexity per token policy (groups) and KV format (bars)", path =>
                    EvalPlots.GroupedBars(path, $"Perplexity by token policy ({Path.GetFileName(run.ModelPath)}, ctx {c})", "perplexity", policies, series));
            }
            return run.Finish();
        }));
        return cmd;
    }

    /// <param name="kvquant">With a calibration profile: KVQuant's bit accounting and the outliers the nuq codecs
    /// stored ("-" for rows that store no nuq side).</param>
    private static MarkdownTable<PerplexityResult> Table(bool kvquant)
    {
        var t = new MarkdownTable<PerplexityResult>()
            .Left("kv", x => x.Kv)
            .Right("ppl", x => MarkdownTable<PerplexityResult>.F(x.Ppl, 4))
            .Right("±", x => MarkdownTable<PerplexityResult>.F(x.PplError, 4))
            .Right("tokens", x => x.Tokens.ToString())
            .Right("bits/element", x => MarkdownTable<PerplexityResult>.F(x.BitsPerElement, 2));
        if (kvquant)
            t.Right("KVQuant bits/element", x => x.KvQuant is { } q ? MarkdownTable<PerplexityResult>.F(q.BitsPerElement, 2) : "-");
        t.Right("KV bytes/token", x => MarkdownTable<PerplexityResult>.F(x.KvBytesPerToken, 0));
        if (kvquant)
        {
            t.Right("outliers/element K, V", x => x.KvQuant is { } q && q.KeyOutlierRate + q.ValueOutlierRate > 0
                ? $"{q.KeyOutlierRate * 100:F2}%, {q.ValueOutlierRate * 100:F2}%" : "-");
        }
        return t;
    }
}
