using System.CommandLine;
using Kvq.Cache;
using Kvq.Cli.Validation;
using Kvq.Eval;

namespace Kvq.Cli.Commands.Eval;

/// <summary>kvq eval kl: KL divergence (mean, 99th and 99.9th percentiles) and top-1 agreement of each spec's next-token
/// distributions against a reference cache's (f16 unless --reference says otherwise).</summary>
public static class KlCommand
{
    public static Command Create()
    {
        var o = new EvalOptions(defaultKv: "f16,q8_0,q4_0");
        var ctx = CheckedOption.Int("--ctx", "window length in tokens (BOS + ctx-1 text tokens)", 512, ValueRange.Between(2, int.MaxValue), null, "-c");
        var windows = CheckedOption.Int("--windows", "windows to evaluate (0 = all)", 8, ValueRange.Between(0, int.MaxValue), "0 = all", "-w");
        var reference = new Option<string>("--reference")
        {
            Description = "the reference cache spec (f16 as llama.cpp's default cache; f32 for the exact attention)",
            DefaultValueFactory = _ => KlEvaluator.DefaultReference,
        };
        var referenceModel = new Option<string?>("--reference-model")
        {
            Description = "model of the reference run (default: --model), e.g. the unquantized GGUF when --model is a llama.cpp-quantized copy",
        };
        var cmd = new Command("kl", "KL(reference || spec) of next-token distributions (mean, 99th and 99.9th percentiles) and top-1 agreement, same windows, reference f16 cache unless --reference");
        o.AddTo(cmd);
        cmd.Add(ctx);
        cmd.Add(windows);
        cmd.Add(reference);
        cmd.Add(referenceModel);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            int c = r.GetValue(ctx);
            var refConfig = KvCacheConfig.Parse(r.GetValue(reference)!);
            using var run = EvalRun.Open("kl", r, o, readText: true);
            DeviceChoice.Check(run.Model, refConfig);
            run.CheckContext(c);
            int available = PerplexityWindows.Count(run.TextTokens.Length, c);
            if (available == 0)
                throw new CliException($"--ctx {c} is longer than the text ({run.TextTokens.Length} tokens in {run.TextPath})");
            int w = r.GetValue(windows);
            w = w <= 0 || w > available ? available : w;
            run.Settings.Add(("ctx", c.ToString()));
            run.Settings.Add(("windows", w.ToString()));
            using var refLoaded = r.GetValue(referenceModel) is { } refPath ? Model.ModelLoader.Load(DefaultPaths.ResolveModel(refPath)) : null;
            Model.ILanguageModel? refModel = null;
            if (refLoaded != null)
            {
                if (refLoaded.Weights.Config.VocabSize != run.Model.Config.VocabSize)
                    throw new CliException($"--reference-model {r.GetValue(referenceModel)}: vocabulary {refLoaded.Weights.Config.VocabSize} differs from the model's {run.Model.Config.VocabSize}");
                refModel = run.LoadModel(refLoaded.Weights);
            }
            using var refOwner = refModel as IDisposable;
            string refModelName = refLoaded == null ? "the same model"
                : $"{Path.GetFileName(refLoaded.Weights.SourcePath)} ({refLoaded.Weights.Fingerprint})";
            run.Settings.Add(("reference", $"{refConfig.Name} cache, {refModelName}"));
            var table = Table();
            run.Output.Header(run.HeaderLine());
            run.Output.Markdown(table.HeaderLines());
            var evaluator = new KlEvaluator(run.Model, run.Loaded.Tokenizer.BosId, refModel);
            // One pass over the windows for all specs (the reference runs once per window): rows come at the end.
            var rows = run.Measure($"kl {string.Join(',', run.Configs.Select(x => x.Name))}",
                (p, cancel) => evaluator.Evaluate(run.TextTokens, c, w, run.Configs, refConfig, p, cancel)) ?? [];
            foreach (var row in rows) run.Output.Row(row, table);
            run.Output.Plot("kl_vs_bits.png", "mean KL divergence from the reference vs stored bits per element, one point per KV spec", path =>
                EvalPlots.LabeledPoints(path, $"KL({refConfig.Name} || spec) vs bits per element, ctx {c}", "bits per element",
                    "mean KL, nats per token (log scale; 0 not shown)", rows.Select(x => (x.Kv, x.BitsPerElement, x.MeanKl)).ToList(), logY: true));
            run.Output.Plot("top1_vs_bits.png", "top-1 agreement with the reference vs stored bits per element", path =>
                EvalPlots.LabeledPoints(path, $"Top-1 agreement with {refConfig.Name} vs bits per element, ctx {c}", "bits per element",
                    "top-1 agreement", rows.Select(x => (x.Kv, x.BitsPerElement, x.Top1Agreement)).ToList()));
            return run.Finish();
        }));
        return cmd;
    }

    private static MarkdownTable<KlResult> Table() => new MarkdownTable<KlResult>()
        .Left("kv", x => x.Kv)
        .Right("mean KL", x => x.MeanKl.ToString("G3", System.Globalization.CultureInfo.InvariantCulture))
        .Right("KL 99%", x => x.P99Kl.ToString("G3", System.Globalization.CultureInfo.InvariantCulture))
        .Right("KL 99.9%", x => x.P999Kl.ToString("G3", System.Globalization.CultureInfo.InvariantCulture))
        .Right("top-1 agree", x => MarkdownTable<KlResult>.F(x.Top1Agreement * 100, 2) + "%")
        .Right("ppl", x => MarkdownTable<KlResult>.F(x.Ppl, 4))
        .Right("ref ppl", x => MarkdownTable<KlResult>.F(x.ReferencePpl, 4))
        .Right("tokens", x => x.Tokens.ToString())
        .Right("bits/element", x => MarkdownTable<KlResult>.F(x.BitsPerElement, 2))
        .Right("KV bytes/token", x => MarkdownTable<KlResult>.F(x.KvBytesPerToken, 0));
}
