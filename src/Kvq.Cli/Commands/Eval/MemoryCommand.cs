using System.CommandLine;
using Kvq.Cli.Validation;
using Kvq.Eval;

namespace Kvq.Cli.Commands.Eval;

/// <summary>kvq eval memory: bytes a sequence's KV cache holds per spec and context length, measured on real caches.</summary>
public static class MemoryCommand
{
    public static Command Create()
    {
        var o = new EvalOptions(defaultKv: "f32,f16,q8_0,q4_0,int4,int2,kivi4,kivi2", text: false, device: false);
        var ctx = new Option<string>("--ctx", "-c") { Description = "comma-separated context lengths in tokens", DefaultValueFactory = _ => "512,1024,2048,4096,8192,16384,32768" };
        var seed = CheckedOption.Int("--seed", "seed of the random keys and values", 1, ValueRange.Between(0, int.MaxValue));
        var cmd = new Command("memory", "KV cache bytes and bits per element per spec at context lengths: a real cache filled with random K/V (no model run), beside the block-layout figure");
        o.AddTo(cmd);
        cmd.Add(ctx);
        cmd.Add(seed);
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var lengths = ListArgument.Ints("--ctx", r.GetValue(ctx), min: 1);
            using var run = EvalRun.Open("memory", r, o, readText: false);
            run.Settings.Add(("ctx", string.Join(',', lengths)));
            run.Settings.Add(("fill", $"random K/V (seed {r.GetValue(seed)}) appended through IKvSequence, 64 tokens a chunk, all layers"));
            var table = Table();
            run.Output.Header(run.HeaderLine());
            run.Output.Markdown(table.HeaderLines());
            var shape = run.Model.KvShape;
            long weights = run.Loaded.Weights.WeightBytes;
            var rows = new List<KvMemoryRow>();
            foreach (var config in run.Configs)
            {
                var res = run.Measure($"memory {config.Name}", (p, cancel) =>
                {
                    var list = new List<KvMemoryRow>();
                    for (int i = 0; i < lengths.Length && !cancel.IsCancellationRequested; i++)
                    {
                        list.Add(KvMemoryEvaluator.Measure(shape, config, lengths[i], weights, r.GetValue(seed), cancel));
                        p(i + 1, lengths.Length);
                    }
                    return list;
                });
                if (res == null) break;
                foreach (var row in res)
                {
                    rows.Add(row);
                    run.Output.Row(row, table);
                }
            }
            run.Output.Plot("kv_memory_vs_ctx.png", "KV cache MiB held by one sequence vs context length, one line per spec (dashed: model weights)", path =>
                EvalPlots.Lines(path, $"KV memory vs context ({Path.GetFileName(run.ModelPath)})", "context (tokens, log scale)", "KV cache MiB (log scale)",
                    rows.GroupBy(x => x.Kv).Select(g => (g.Key, g.Select(x => (double)x.Ctx).ToArray(),
                        g.Select(x => x.KvBytes / 1048576.0).ToArray())).ToList(),
                    log2X: true, logY: true, reference: ("weights", weights / 1048576.0)));
            return run.Finish();
        }));
        return cmd;
    }

    private static MarkdownTable<KvMemoryRow> Table() => new MarkdownTable<KvMemoryRow>()
        .Left("kv", x => x.Kv)
        .Right("ctx", x => x.Ctx.ToString())
        .Right("KV bytes", x => MarkdownTable<KvMemoryRow>.N(x.KvBytes))
        .Right("KV MiB", x => MarkdownTable<KvMemoryRow>.F(x.KvBytes / 1048576.0, 2))
        .Right("layout bytes", x => MarkdownTable<KvMemoryRow>.N(x.LayoutBytes))
        .Right("staging+sink", x => MarkdownTable<KvMemoryRow>.N(x.StagingBytes))
        .Right("bits/element", x => MarkdownTable<KvMemoryRow>.F(x.BitsPerElement, 3))
        .Right("bytes/token", x => MarkdownTable<KvMemoryRow>.F(x.KvBytesPerToken, 1))
        .Right("vs f16", x => MarkdownTable<KvMemoryRow>.F(x.KvBytes / (double)x.F16Bytes, 3) + "x")
        .Right("weights bytes", x => MarkdownTable<KvMemoryRow>.N(x.WeightsBytes));
}
