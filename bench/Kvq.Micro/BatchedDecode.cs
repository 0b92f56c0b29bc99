using System.Diagnostics;
using Kvq.Cache;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;

namespace Kvq.Micro;

/// <summary>
/// --quick-batch: decode speed of the serving engine's batched step (IBatchedLanguageModel.ForwardBatch, B decode
/// rows through MatVecRows) against B sequences decoded one Forward at a time, books-19m, f16 cache. Interleaved
/// rounds, best of each (load only adds time). A steady-state step allocates nothing (BatchedForwardTests).
/// </summary>
public static class BatchedDecode
{
    /// <summary>The cache config of <paramref name="kv"/>; calibrated formats (nuq) read their profile from the file that
    /// KVQ_PROFILE names (a books-19m profile from <c>kvq calibrate</c>).</summary>
    private static KvCacheConfig Config(string kv) => KvCacheConfig.Parse(kv) with
    {
        Profile = kv.StartsWith("nuq", StringComparison.Ordinal)
            ? Cache.Codecs.KvQuant.KvQuantProfileFile.Read(Environment.GetEnvironmentVariable("KVQ_PROFILE")
                ?? throw new ArgumentException($"{kv} needs a profile: set KVQ_PROFILE to a books-19m .kvqp file"))
            : null,
    };

    public static void Run(string modelPath, int threads, int context, int[] batches, string kv)
    {
        // KVQ_BATCH_LEVERS=off: the weight-row prefetch and the cheap f16 widening off (the kernels as before them),
        // for old/new A/B runs of one build.
        bool levers = Environment.GetEnvironmentVariable("KVQ_BATCH_LEVERS") != "off";
        Tensors.Quant.HalfRowBlock.PrefetchNextRows = levers;
        Cache.Attention.HalfTileMath.FiniteWidening = levers;
        using var weights = GgufModelLoader.Load(modelPath);
        var model = new Transformer(weights, new Parallelism(threads), 256);
        int vocab = weights.Config.VocabSize;
        const int Steps = 48, Rounds = 5;
        var rng = new Random(11);
        Console.WriteLine($"books-19m, {threads} threads, kv {kv}, context {context}, {Steps} decode steps, best of {Rounds} rounds, levers {(levers ? "on" : "off")}; load {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine("| sequences | batched tok/s | one at a time tok/s | batched / one at a time | vs 1 sequence |");
        Console.WriteLine("|---:|---:|---:|---:|---:|");
        // Warm-up: ForwardBatch and the batched kernels reach the JIT's optimised tier before anything is timed (the
        // lone Forward is warmed by every prefill already).
        {
            var cache = new PagedKvCache(model.KvShape, Config(kv));
            var warm = Enumerable.Range(0, 4).Select(_ => cache.CreateSequence()).ToArray();
            var logits = new float[4 * vocab];
            foreach (var s in warm) model.Forward(Enumerable.Range(3, 64).ToArray(), s, logits.AsSpan(0, vocab));
            var segments = warm.Select((s, i) => new BatchSegment(s, i, 1, Decode: true, Logits: true)).ToArray();
            for (int step = 0; step < 200; step++) model.ForwardBatch([5, 6, 7, 8], segments, logits);
            var one = new[] { segments[0] with { Start = 0 } };
            for (int step = 0; step < 200; step++) model.ForwardBatch([9], one, logits);
        }
        double single = 0;
        foreach (int b in batches)
        {
            double bestBatched = 0, bestSeq = 0;
            for (int round = 0; round < Rounds; round++)
            {
                // Two arms per round: the batched step, one Forward at a time. (Session 11's third arm, the batched step
                // with its per-sequence work and activation on the calling thread, went with Transformer.ParallelRest
                // once the parallel rest had won: +5% at 16 and 32 sequences, docs/perf.md.)
                foreach (bool batched in new[] { true, false })
                {
                    var cache = new PagedKvCache(model.KvShape, Config(kv));
                    var seqs = new PagedKvSequence[b];
                    var logits = new float[b * vocab];
                    for (int i = 0; i < b; i++)
                    {
                        seqs[i] = cache.CreateSequence();
                        var prompt = new int[context];
                        for (int t = 0; t < context; t++) prompt[t] = rng.Next(3, vocab);
                        model.Forward(prompt, seqs[i], logits.AsSpan(0, vocab));
                    }
                    var tokens = new int[b];
                    var segments = new BatchSegment[b];
                    for (int i = 0; i < b; i++) segments[i] = new BatchSegment(seqs[i], i, 1, Decode: true, Logits: true);
                    var sw = Stopwatch.StartNew();
                    for (int s = 0; s < Steps; s++)
                    {
                        for (int i = 0; i < b; i++) tokens[i] = rng.Next(3, vocab);
                        if (batched) model.ForwardBatch(tokens, segments, logits);
                        else
                            for (int i = 0; i < b; i++) model.Forward(tokens.AsSpan(i, 1), seqs[i], logits.AsSpan(i * vocab, vocab));
                    }
                    double tokS = b * Steps / sw.Elapsed.TotalSeconds;
                    if (batched) bestBatched = Math.Max(bestBatched, tokS);
                    else bestSeq = Math.Max(bestSeq, tokS);
                }
            }
            if (b == batches[0]) single = bestBatched;
            Console.WriteLine($"| {b} | {bestBatched:F0} | {bestSeq:F0} | {bestBatched / bestSeq:F2}x | {bestBatched / single:F2}x |");
        }
        Console.WriteLine($"load {File.ReadAllText("/proc/loadavg").Trim()}");
    }
}
