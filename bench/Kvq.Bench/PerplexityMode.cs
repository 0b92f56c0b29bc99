using Kvq.Eval;
using Kvq.LlamaCpp;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;

namespace Kvq.Bench;

/// <summary>Perplexity of Kvq's caches and llama.cpp's caches on the same windows, in one run.</summary>
public static class PerplexityMode
{
    public static void Run(Args opts)
    {
        var modelPath = opts.Get("--model", Path.Combine("..", "shared", "models", "books-19m.gguf"));
        var textPath = opts.Get("--text", Path.Combine("..", "shared", "text", "books", "pg2489_moby_dick.txt"));
        int ctx = int.Parse(opts.Get("--ctx", "512"));
        int windows = int.Parse(opts.Get("--windows", "60"));
        int threads = int.Parse(opts.Get("--threads", "2"));
        var kvs = opts.Get("--kv", "f16,q8_0,q4_0").Split(',');
        var peerKvs = opts.Get("--peer-kv", "f16,q8_0,q4_0").Split(',');

        using var peer = new LlamaCppModel(modelPath);
        var tokens = peer.Tokenize(Text.TextNormalizer.ReadNormalized(textPath), addBos: false);
        using var weights = GgufModelLoader.Load(modelPath);
        int vocab = weights.Config.VocabSize;
        windows = Math.Min(windows, PerplexityWindows.Count(tokens.Length, ctx));
        Console.WriteLine($"Machine: {MachineInfo.Describe()}; model {Path.GetFileName(modelPath)}; text {Path.GetFileName(textPath)} " +
                          $"({tokens.Length} tokens); {windows} windows of {ctx} (BOS + {ctx - 1} text tokens); {threads} threads");
        Console.WriteLine();
        Console.WriteLine("| engine | kv | ppl | bits/element | seconds |");
        Console.WriteLine("|---|---|---:|---:|---:|");
        foreach (var kv in peerKvs)
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            using var session = peer.CreateSession(ctx, threads, kv);
            double ppl = PerplexityWindows.Perplexity(win => { session.Reset(); return session.Eval(win, allLogits: true); },
                tokens, ctx, windows, bos: 1, vocab);
            double bits = kv switch { "f16" => 16, "q8_0" => 8.5, "q4_0" => 4.5, "f32" => 32, _ => double.NaN };
            Console.WriteLine($"| llama.cpp | {kv} | {ppl:F4} | {bits:F2} | {sw.Elapsed.TotalSeconds:F0} |");
        }
        var evaluator = new PerplexityEvaluator(new Transformer(weights, new Parallelism(threads)), bos: 1);
        foreach (var kv in kvs)
        {
            var r = evaluator.Evaluate(tokens, ctx, windows, kv);
            Console.WriteLine($"| kvq | {r.Kv} | {r.Ppl:F4} | {r.BitsPerElement:F2} | {r.Seconds:F0} |");
        }
    }
}
