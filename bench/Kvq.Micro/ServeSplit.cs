using System.Diagnostics;
using Kvq.Cache;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;

namespace Kvq.Micro;

/// <summary>
/// --serve-split: where the CPU of `Kvq.Bench --mode serve`'s budget run (32 requests of P prompt + O output tokens)
/// goes, per KV format: the prefill of one P-token prompt in 256-token chunks through ForwardBatch (as the engine runs
/// it), and one batched decode step of B sequences at context P + O/2 (B = the format's running requests at the
/// budget). The B sequences are forks of one prefilled prompt (sharing its full blocks; prefilling B distinct prompts
/// would take minutes), so the step's attention reads one prompt's KV B times from warm caches: a lower bound on the
/// decode step. Then the run's CPU modelled as 32 prefills + 32 x O / B steps, and the output tok/s ratio it implies.
/// Process CPU time at 1 thread counts work whatever the machine's load.
/// </summary>
public static class ServeSplit
{
    public static void Run(string modelPath, int threads, string[] kvs, int[] running, int prompt, int output, int rounds)
    {
        using var weights = GgufModelLoader.Load(modelPath);
        var model = new Transformer(weights, new Parallelism(threads), 256);
        var c = weights.Config;
        var rng = new Random(3);
        var tokens = Enumerable.Range(0, prompt + output).Select(_ => rng.Next(3, c.VocabSize)).ToArray();
        var proc = Process.GetCurrentProcess();
        double Cpu() { proc.Refresh(); return proc.TotalProcessorTime.TotalMilliseconds; }
        Console.WriteLine($"books-19m, {threads} thread(s), {prompt}-token prompts in 256-token chunks, decode at context {prompt + output / 2}, best of {rounds}; load {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine("| kv | running B | prefill CPU ms per prompt | decode step CPU ms at B | per decode token ms | run CPU s: 32 prefills + decode | prefill share |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
        var runCpu = new double[kvs.Length];
        var prefillCpu = new double[kvs.Length];
        for (int k = 0; k < kvs.Length; k++)
        {
            var config = KvCacheConfig.Parse(kvs[k]) with
            {
                Profile = kvs[k].StartsWith("nuq", StringComparison.Ordinal) ? Cache.Codecs.KvQuant.KvQuantProfileFile.Read(Environment.GetEnvironmentVariable("KVQ_PROFILE")!) : null,
                SinkTokens = 1, // as the serve table runs both formats
            };
            int b = running[k];
            double bestPrefill = double.MaxValue, bestStep = double.MaxValue;
            var logits = new float[b * c.VocabSize];
            for (int round = 0; round < rounds; round++)
            {
                var cache = new PagedKvCache(model.KvShape, config);
                var seq = cache.CreateSequence();
                double c0 = Cpu();
                for (int at = 0; at < prompt; at += 256)
                {
                    int n = Math.Min(256, prompt - at);
                    model.ForwardBatch(tokens.AsSpan(at, n), [new BatchSegment(seq, 0, n, Decode: false, Logits: at + n == prompt)], logits);
                }
                bestPrefill = Math.Min(bestPrefill, Cpu() - c0);
                // Grow to the mid-decode context, then fork B sequences from it.
                for (int at = prompt; at < prompt + output / 2; at += 64)
                {
                    int n = Math.Min(64, prompt + output / 2 - at);
                    model.ForwardBatch(tokens.AsSpan(at, n), [new BatchSegment(seq, 0, n, Decode: false, Logits: false)], logits);
                }
                var seqs = Enumerable.Range(0, b).Select(_ => seq.Fork()).ToArray();
                var segments = seqs.Select((s, i) => new BatchSegment(s, i, 1, Decode: true, Logits: true)).ToArray();
                var step = new int[b];
                for (int w = 0; w < 3; w++) { for (int i = 0; i < b; i++) step[i] = rng.Next(3, c.VocabSize); model.ForwardBatch(step, segments, logits); }
                const int Steps = 8;
                c0 = Cpu();
                for (int s = 0; s < Steps; s++) { for (int i = 0; i < b; i++) step[i] = rng.Next(3, c.VocabSize); model.ForwardBatch(step, segments, logits); }
                bestStep = Math.Min(bestStep, (Cpu() - c0) / Steps);
            }
            double decodeCpu = 32.0 * output / b * bestStep;
            prefillCpu[k] = 32 * bestPrefill;
            runCpu[k] = (prefillCpu[k] + decodeCpu) / 1000;
            Console.WriteLine($"| {kvs[k]} | {b} | {bestPrefill:F0} | {bestStep:F1} | {bestStep / b:F2} | {runCpu[k]:F1} | {prefillCpu[k] / 1000 / runCpu[k]:P0} |");
        }
        // The feed-forward activation of one 256-row chunk, every layer, on one thread (what ForwardChunk ran serially
        // before branch batch14): its share of a chunk's prefill.
        {
            var gate = new float[256 * c.FfnDim];
            var up = new float[256 * c.FfnDim];
            for (int i = 0; i < gate.Length; i++) { gate[i] = (float)(rng.NextDouble() * 8 - 4); up[i] = (float)(rng.NextDouble() * 2 - 1); }
            double best = double.MaxValue;
            for (int round = 0; round < 5; round++)
            {
                var sw = Stopwatch.StartNew();
                for (int l = 0; l < c.Layers; l++) Kernels.SwiGlu(gate, up);
                best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
            }
            Console.WriteLine($"SwiGLU of a 256-row chunk, {c.Layers} layers, 1 thread: {best:F2} ms (prefill of the chunk at 1 thread: ~{prefillCpu[0] / 32 * 256 / prompt:F0} ms CPU for {kvs[0]})");
        }
        for (int k = 1; k < kvs.Length; k++)
            Console.WriteLine($"{kvs[k]} vs {kvs[0]}: modelled output tok/s {runCpu[0] / runCpu[k]:F2}x; with a free decode (prefill only) at most {runCpu[0] / (prefillCpu[k] / 1000):F2}x");
        Console.WriteLine($"load {File.ReadAllText("/proc/loadavg").Trim()}");
    }
}
