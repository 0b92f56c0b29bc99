using System.Globalization;
using System.Text.Json;
using Kvq.Bench.Serving;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Formats.Gguf;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Serving;
using Kvq.Tensors;
using Kvq.Text;
using Kvq.Tokenizers;

namespace Kvq.Bench;

/// <summary>
/// --mode serve: Kvq's serving engine and llama.cpp's batched decoding on the same requests (cut from real text) at
/// the same KV byte budget, same model, same threads, in one run; one JSON line per (engine, kv) and a markdown table.
/// </summary>
public static class ServeMode
{
    public static void Run(Args opts)
    {
        var modelPath = opts.Get("--model", Path.Combine("..", "shared", "models", "books-19m.gguf"));
        var textPath = opts.Get("--text", Path.Combine("..", "shared", "text", "books", "pg2489_moby_dick.txt"));
        var kvs = opts.Get("--kv", "f16,nuq3-1%").Split(',');
        var peerKvs = opts.Get("--peer-kv", "f16").Split(',', StringSplitOptions.RemoveEmptyEntries);
        long budget = Bytes.Parse(opts.Get("--kv-budget", "64MiB"));
        int threads = int.Parse(opts.Get("--threads", "2"), CultureInfo.InvariantCulture);
        int step = int.Parse(opts.Get("--step-tokens", "256"), CultureInfo.InvariantCulture);
        var workload = new ServeWorkload
        {
            Requests = int.Parse(opts.Get("--requests", "32"), CultureInfo.InvariantCulture),
            PromptTokens = int.Parse(opts.Get("--prompt-tokens", "2000"), CultureInfo.InvariantCulture),
            OutputTokens = int.Parse(opts.Get("--output-tokens", "200"), CultureInfo.InvariantCulture),
            SharedPrefix = double.Parse(opts.Get("--shared-prefix", "0"), CultureInfo.InvariantCulture),
            Concurrency = int.Parse(opts.Get("--concurrency", "32"), CultureInfo.InvariantCulture),
        };
        bool prefixCache = opts.Get("--prefix-cache", "on") == "on";
        string profilePath = opts.Get("--profile", "");
        var json = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

        using var weights = GgufModelLoader.Load(modelPath);
        var tokenizer = TokenizerFactory.FromGguf(GgufFile.Open(modelPath));
        var profile = profilePath.Length == 0 ? null : KvQuantProfile.Load(profilePath, weights.Fingerprint);
        var text = tokenizer.Encode(TextNormalizer.ReadNormalized(textPath), addBos: false);
        var requests = workload.Build(text, tokenizer.AddBos ? tokenizer.BosId : -1);
        string name = Path.GetFileName(modelPath);
        var rows = new List<ServeBenchResult>();
        var c = weights.Config;
        foreach (var pkv in peerKvs)
        {
            double perToken = (double)c.Layers * c.KvDim * 2 * PeerBytesPerValue(pkv);
            using var peer = new LlamaCppServe(modelPath, budget, (long)Math.Ceiling(perToken), workload.PromptTokens + workload.OutputTokens,
                threads, pkv, step);
            var (timings, seconds) = LoadGenerator.Run(requests, workload, peer.Send).GetAwaiter().GetResult();
            long peerKv = (long)peer.ContextTokens * (long)Math.Ceiling(perToken);
            var row = ServeBenchResult.From("llama.cpp", name, pkv, workload, timings, seconds, peer.Slots, peerKv, peerKv, budget, 0, 0, threads);
            rows.Add(row);
            Console.WriteLine(JsonSerializer.Serialize(row, json));
        }
        var model = new Transformer(weights, new Parallelism(threads), step);
        foreach (var kv in kvs)
        {
            var config = Cache.KvCacheConfig.Parse(kv) with { Profile = profile, SinkTokens = profile?.Settings.SinkTokens ?? 0 };
            var options = new EngineOptions { Kv = config, KvBudgetBytes = budget, StepTokens = step, PrefixCache = prefixCache, MaxRunning = 256 };
            var row = ServeBenchmark.Run(model, tokenizer, name, options, workload, requests).GetAwaiter().GetResult();
            rows.Add(row);
            Console.WriteLine(JsonSerializer.Serialize(row, json));
        }
        Console.WriteLine();
        Console.WriteLine($"Machine: {MachineInfo.Describe()}; model {name}; {threads} threads; {workload.Describe()}; KV budget " +
                          $"{Bytes.Format(budget)}; prefix cache {(prefixCache ? "on" : "off")}.");
        Console.WriteLine();
        Console.WriteLine("| engine | kv | completed | max running | output tok/s | vs llama.cpp | TTFT p50 / p99 ms | ITL p50 / p99 ms | peak KV | preemptions | prefix hits |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var baseline = rows.FirstOrDefault(r => r.Engine == "llama.cpp");
        foreach (var r in rows)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r.Engine} | {r.Kv} | {r.Completed}/{r.Requests} | {r.MaxRunning} | {r.OutputTokS:F1} | " +
                $"{(baseline == null ? "" : $"{r.OutputTokS / baseline.OutputTokS:F2}x")} | {r.TtftP50Ms:F0} / {r.TtftP99Ms:F0} | " +
                $"{r.ItlP50Ms:F1} / {r.ItlP99Ms:F1} | {Bytes.Format(r.PeakKvBytes)} | {r.Preemptions} | {r.PrefixHitRate:P0} |"));
    }

    /// <summary>Bytes per cached value in llama.cpp's cache types (q8_0: 34 bytes per 32, q4_0: 18 per 32).</summary>
    private static double PeerBytesPerValue(string type) => type switch
    {
        "f16" => 2,
        "f32" => 4,
        "q8_0" => 34.0 / 32,
        "q4_0" => 18.0 / 32,
        _ => throw new ArgumentException($"--peer-kv: no byte size known for '{type}'"),
    };
}
