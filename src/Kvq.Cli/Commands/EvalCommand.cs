using System.CommandLine;
using System.Text.Json;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Eval;
using Kvq.Model;
using Kvq.Text;

namespace Kvq.Cli.Commands;

/// <summary>kvq eval: quality of KV cache formats on real text.</summary>
public static class EvalCommand
{
    public static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static Command Create()
    {
        var cmd = new Command("eval", "measure the quality of KV cache formats");
        cmd.Add(CreatePpl());
        return cmd;
    }

    private static Command CreatePpl()
    {
        var model = CommonOptions.Model();
        var text = new Option<string>("--text") { Description = "UTF-8 text file (BOM dropped, CRLF -> LF)", Required = true };
        var ctx = new Option<int>("--ctx", "-c") { Description = "window length in tokens (BOS + ctx-1 text tokens)", DefaultValueFactory = _ => 512 };
        var kv = new Option<string>("--kv") { Description = "comma-separated KV specs: NAME or KEYS/VALUES, e.g. f16,q8_0,q4_0", DefaultValueFactory = _ => "f16" };
        var windows = new Option<int>("--windows", "-w") { Description = "windows to evaluate (0 = all)", DefaultValueFactory = _ => 0 };
        var threads = CommonOptions.Threads();
        var json = CommonOptions.Json();
        var profile = KvProfileOptions.Profile();
        var sink = KvProfileOptions.Sink();
        var cmd = new Command("ppl", "perplexity over non-overlapping windows, the cache fresh for each window") { model, text, ctx, kv, windows, threads, json, profile, sink };
        cmd.SetAction(r => CommandRunner.Run(() =>
        {
            var textPath = r.GetValue(text)!;
            if (!File.Exists(textPath)) throw new CliException($"text file not found: {textPath}");
            var specs = r.GetValue(kv)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            using var loaded = ModelLoader.Load(DefaultPaths.ResolveModel(r.GetValue(model)));
            var prof = KvProfileOptions.Load(r.GetValue(profile), loaded.Weights.Fingerprint);
            var configs = specs.Select(s => KvProfileOptions.Config(s, prof, r.GetValue(sink))).ToList();
            foreach (var cfg in configs) cfg.CreateCodec(Kvq.Cache.Codecs.KvSide.Key, 0, 0, loaded.Weights.Config.HeadDim); // fail fast on unknown names
            int c = r.GetValue(ctx);
            var tokens = loaded.Tokenizer.Encode(TextNormalizer.ReadNormalized(textPath), addBos: false);
            if (PerplexityWindows.Count(tokens.Length, Math.Max(2, c)) == 0)
                throw new CliException($"--ctx {c} is longer than the text ({tokens.Length} tokens in {textPath})");
            var transformer = new Transformer(loaded.Weights, new Tensors.Parallelism(r.GetValue(threads)));
            var evaluator = new PerplexityEvaluator(transformer, loaded.Tokenizer.BosId);
            bool asJson = r.GetValue(json);
            if (!asJson)
            {
                Console.WriteLine($"model {Path.GetFileName(loaded.Weights.SourcePath)} ({loaded.Weights.Fingerprint}), text {Path.GetFileName(textPath)}, ctx {c}, threads {transformer.Parallelism.Threads}" +
                                  (prof == null ? "" : $", profile {Path.GetFileName(r.GetValue(profile))}, sink {configs[0].SinkTokens}"));
                Console.WriteLine(prof == null ? "| kv | ppl | tokens | bits/element | KV bytes/token |" : KvQuantColumns.Header);
                Console.WriteLine(prof == null ? "|---|---:|---:|---:|---:|" : KvQuantColumns.Rule);
            }
            foreach (var cfg in configs)
            {
                KvQuantCounters.ResetTotals();
                var res = Progress.Run($"ppl {cfg.Name}", p => evaluator.Evaluate(tokens, c, r.GetValue(windows), cfg, p));
                if (asJson) Console.WriteLine(JsonSerializer.Serialize(res, Json));
                else if (prof == null) Console.WriteLine($"| {res.Kv} | {res.Ppl:F4} | {res.Tokens} | {res.BitsPerElement:F2} | {res.KvBytesPerToken:F0} |");
                else Console.WriteLine(KvQuantColumns.Row(res, cfg, loaded.Weights.Config.HeadDim));
            }
            return 0;
        }));
        return cmd;
    }
}
