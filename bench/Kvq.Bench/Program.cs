using System.Diagnostics;
using System.Text.Json;
using Kvq.Bench;
using Kvq.LlamaCpp;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;

// Usage: dotnet run --project bench/Kvq.Bench -c Release -- [--model M] [--ctx 512,4000] [--kv f16] [--peer-kv f16] [--threads 2] [--decode 32]
//                                                           [--profile P.kvqp] [--sink N] [--rounds 1]
//        dotnet run --project bench/Kvq.Bench -c Release -- --mode ppl [--model M] [--text T] [--ctx 512] [--windows 60] [--kv f16,q8_0,q4_0] [--peer-kv f16,q8_0,q4_0]
//        dotnet run --project bench/Kvq.Bench -c Release -- --mode serve [--model M] [--kv f16,nuq3-1%] [--profile P] [--peer-kv f16] [--kv-budget 64MiB]
//                                                           [--requests 32] [--prompt-tokens 2000] [--output-tokens 200] [--concurrency 32] [--shared-prefix 0]
//        dotnet run --project bench/Kvq.Bench -c Release -- --mode quantize [--model M] [--type Q4_K_M] [--out path.gguf]
// Throughput mode prints one JSON line per (engine, ctx, kv) and a markdown table with kvq/llama.cpp ratios.
// Perplexity mode evaluates both engines on the same windows of the same tokens (llama.cpp's tokenizer).
var opts = Args.Parse(args);
if (opts.Get("--mode", "speed") == "ppl")
{
    PerplexityMode.Run(opts);
    return;
}
if (opts.Get("--mode", "speed") == "serve")
{
    ServeMode.Run(opts);
    return;
}
if (opts.Get("--mode", "speed") == "quantize")
{
    QuantizeMode.Run(opts);
    return;
}
var modelPath = opts.Get("--model", Path.Combine("..", "shared", "models", "books-19m.gguf"));
var ctxs = opts.Get("--ctx", "512,4000").Split(',').Select(int.Parse).ToArray();
var kvs = opts.Get("--kv", "f16") is "none" ? Array.Empty<string>() : opts.Get("--kv", "f16").Split(','); // "none": llama.cpp only
var peerKvs = opts.Get("--peer-kv", "f16").Split(',');
int threads = int.Parse(opts.Get("--threads", "2"));
int decode = int.Parse(opts.Get("--decode", "32"));
// --rounds R repeats the whole (peer, kvq) sweep of a context R times and keeps each row's best: on a shared
// machine the engines then see the same stretches of load, instead of one engine measured in a quiet minute.
int rounds = int.Parse(opts.Get("--rounds", "1"));
// --repetitions N: each row of a round is the best of N runs, with the spread of all N printed (as `kvq bench -r N`);
// 2 by default (ThroughputBenchmark.Best).
int repetitions = int.Parse(opts.Get("--repetitions", "2"));
string? profilePath = opts.Get("--profile", "");
int? sinkOpt = opts.Get("--sink", "") is { Length: > 0 } sk ? int.Parse(sk) : null;
var json = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
var rows = new List<ThroughputResult>();

using var weights = GgufModelLoader.Load(modelPath);
var model = new Transformer(weights, new Parallelism(threads));
using var peer = new LlamaCppModel(modelPath);
string name = Path.GetFileName(modelPath);
// KVQuant specs need a calibration profile (checked against the model); the sink defaults to the profile's.
var profile = string.IsNullOrEmpty(profilePath) ? null : Kvq.Cache.Codecs.KvQuant.KvQuantProfile.Load(profilePath, weights.Fingerprint);
// A kv entry KV#old runs with Int8MatVec switched off (Q8_0/Q4_0 weights through the float kernels used before it),
// interleaved with the plain KV rows in the same process: an A/B of the weight products.
Kvq.Cache.KvCacheConfig Config(string kv) =>
    Kvq.Cache.KvCacheConfig.Parse(kv.Split('#')[0]) with { Profile = profile, SinkTokens = sinkOpt ?? profile?.Settings.SinkTokens ?? 0 };
foreach (var kv in kvs) ThroughputBenchmark.WarmUp(model, name, 256, Config(kv));
// Each figure is the better of two runs (ThroughputBenchmark.Best), for both engines, and the best over rounds.
foreach (var ctx in ctxs)
{
    var best = new Dictionary<string, ThroughputResult>();
    void Keep(string key, ThroughputResult r)
    {
        if (!best.TryGetValue(key, out var b) || r.DecodeTokS + r.PrefillTokS > b.DecodeTokS + b.PrefillTokS) best[key] = r;
        Console.WriteLine(JsonSerializer.Serialize(r, json));
    }
    for (int round = 0; round < rounds; round++)
    {
        foreach (var pkv in peerKvs)
            Keep("peer " + pkv, ThroughputBenchmark.Repeat(repetitions, () => LlamaCppThroughput(peer, name, ctx, pkv, threads, decode)));
        foreach (var kv in kvs)
        {
            Kvq.Tensors.Quant.Int8MatVec.Enabled = !kv.EndsWith("#old", StringComparison.Ordinal);
            Keep("kvq " + kv, ThroughputBenchmark.Repeat(repetitions, () => ThroughputBenchmark.Run(model, name, ctx, Config(kv), decode)) with { Kv = kv });
            Kvq.Tensors.Quant.Int8MatVec.Enabled = true;
        }
    }
    foreach (var pkv in peerKvs) rows.Add(best["peer " + pkv]);
    foreach (var kv in kvs) rows.Add(best["kvq " + kv]);
}
Console.WriteLine();
Console.WriteLine($"Machine: {MachineInfo.Describe()}; model {name}; {threads} threads; decode {decode} tokens after the prompt; " +
    $"best of {rounds} round(s) of {repetitions} runs each; load average {LoadAverage()}.");
Console.WriteLine();
Console.WriteLine("| engine | ctx | kv | prefill tok/s | decode tok/s | decode vs llama.cpp f16 | decode spread (tok/s) | prefill CPU us/token | decode CPU us/token | peak RSS MiB |");
Console.WriteLine("|---|---:|---|---:|---:|---:|---|---:|---:|---:|");
foreach (var r in rows)
{
    var baseline = rows.First(x => x.Engine == "llama.cpp" && x.Ctx == r.Ctx && x.Kv == peerKvs[0]);
    Console.WriteLine($"| {r.Engine} | {r.Ctx} | {r.Kv} | {r.PrefillTokS:F0} | {r.DecodeTokS:F1} | {r.DecodeTokS / baseline.DecodeTokS:F2}x | {r.DecodeSpread} | " +
        $"{r.PrefillCpuS * 1e6 / r.Ctx:F0} | {r.DecodeCpuS * 1e6 / r.DecodeTokens:F0} | {r.PeakMemoryBytes / 1048576.0:F0} |");
}

static string LoadAverage()
{
    try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
    catch (IOException) { return "n/a"; }
}

static ThroughputResult LlamaCppThroughput(LlamaCppModel peer, string name, int ctx, string kv, int threads, int decode)
{
    var prompt = ThroughputBenchmark.PromptTokens(ctx, peer.VocabSize);
    using var s = peer.CreateSession(ctx + decode + 8, threads, kv);
    s.Eval(prompt.AsSpan(0, Math.Min(64, ctx)).ToArray(), false); // warm-up
    s.Reset();
    var cpu0 = ThroughputBenchmark.CpuSeconds();
    var sw = Stopwatch.StartNew();
    var logits = s.Eval(prompt, false);
    double prefill = sw.Elapsed.TotalSeconds;
    var cpu1 = ThroughputBenchmark.CpuSeconds();
    sw.Restart();
    var one = new int[1];
    for (int i = 0; i < decode; i++)
    {
        one[0] = ThroughputBenchmark.Argmax(logits);
        logits = s.Eval(one, false);
    }
    double dec = sw.Elapsed.TotalSeconds;
    var cpu2 = ThroughputBenchmark.CpuSeconds();
    return new ThroughputResult("llama.cpp", name, ctx, kv, threads, decode, ctx / prefill, decode / dec,
        Process.GetCurrentProcess().PeakWorkingSet64, 0, MachineInfo.Describe(), cpu1 - cpu0, cpu2 - cpu1);
}

public sealed class Args(Dictionary<string, string> values)
{
    public static Args Parse(string[] a)
    {
        var d = new Dictionary<string, string>();
        for (int i = 0; i + 1 < a.Length; i += 2) d[a[i]] = a[i + 1];
        return new Args(d);
    }
    public string Get(string key, string fallback) => values.GetValueOrDefault(key, fallback);
}
