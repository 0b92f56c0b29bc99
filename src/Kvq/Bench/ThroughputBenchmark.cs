using System.Diagnostics;
using Kvq.Cache;
using Kvq.Model;

namespace Kvq.Bench;

/// <summary>
/// Prefill of <c>ctx</c> tokens, then greedy decode of a few more, timed separately. Token ids are drawn from a
/// seeded generator: speed does not depend on the text, and both engines get the same ids. Runs on any
/// <see cref="ILanguageModel"/> (a GPU model's sequence lives in device memory; its bytes are reported the same way).
/// </summary>
public static class ThroughputBenchmark
{
    public static int[] PromptTokens(int ctx, int vocab, int seed = 1234)
    {
        var rng = new Random(seed);
        var t = new int[ctx];
        t[0] = 1;
        for (int i = 1; i < ctx; i++) t[i] = rng.Next(3, vocab);
        return t;
    }

    public static ThroughputResult Run(ILanguageModel model, string modelName, int ctx, string kvSpec, int decodeTokens) =>
        Run(model, modelName, ctx, KvCacheConfig.Parse(kvSpec), decodeTokens);

    /// <summary>The same with a full cache config (calibration profile, attention sinks).</summary>
    public static ThroughputResult Run(ILanguageModel model, string modelName, int ctx, KvCacheConfig config, int decodeTokens)
    {
        var prompt = PromptTokens(ctx, model.Config.VocabSize);
        var seq = model.CreateSequence(config, ctx + decodeTokens);
        using var owner = seq as IDisposable;
        var logits = new float[model.Config.VocabSize];
        var cpu0 = CpuSeconds();
        var sw = Stopwatch.StartNew();
        model.Forward(prompt, seq, logits);
        double prefill = sw.Elapsed.TotalSeconds;
        var cpu1 = CpuSeconds();
        var one = new int[1];
        sw.Restart();
        for (int i = 0; i < decodeTokens; i++)
        {
            one[0] = Argmax(logits);
            model.Forward(one, seq, logits);
        }
        double decode = sw.Elapsed.TotalSeconds;
        var cpu2 = CpuSeconds();
        return new ThroughputResult("kvq", modelName, ctx, config.Name, model.Threads, decodeTokens,
            ctx / prefill, decodeTokens / decode, Process.GetCurrentProcess().PeakWorkingSet64, seq.ReportMemory().TotalBytes,
            MachineInfo.Describe(), cpu1 - cpu0, cpu2 - cpu1, model.Device);
    }

    /// <summary>CPU time of this process so far, all threads (user + system).</summary>
    public static double CpuSeconds()
    {
        using var p = Process.GetCurrentProcess();
        return p.TotalProcessorTime.TotalSeconds;
    }

    /// <summary>Enough work for the JIT to reach its optimised tier, and the weights paged in. Decode steps are
    /// what tier up last (one call per token): with 16 of them the first configuration of a sweep still ran
    /// partly unoptimised code (f16 at 512 tokens: 0.87x where the same build measured second gave 1.11x), so 48,
    /// then a pause for the background compiler to install what it queued.</summary>
    public static void WarmUp(ILanguageModel model, string modelName, int ctx, KvCacheConfig config)
    {
        for (int i = 0; i < 3; i++) Run(model, modelName, Math.Min(256, ctx), config, 48);
        Thread.Sleep(300);
    }

    /// <summary>The better of two runs: the machine may be shared, and the first run of a context pays for page faults.</summary>
    public static ThroughputResult Best(Func<ThroughputResult> run)
    {
        var a = run();
        var b = run();
        return a.DecodeTokS + a.PrefillTokS >= b.DecodeTokS + b.PrefillTokS ? a : b;
    }

    /// <summary><paramref name="repetitions"/> runs: the best (as <see cref="Best"/>) with the spread of all of them.</summary>
    public static ThroughputResult Repeat(int repetitions, Func<ThroughputResult> run)
    {
        if (repetitions < 1) throw new ArgumentOutOfRangeException(nameof(repetitions), repetitions, "at least one run");
        var runs = new List<ThroughputResult>(repetitions);
        for (int i = 0; i < repetitions; i++) runs.Add(run());
        var best = runs.MaxBy(x => x.DecodeTokS + x.PrefillTokS)!;
        return best with
        {
            Repetitions = repetitions,
            PrefillSpread = Spread.Of(runs.Select(x => x.PrefillTokS).ToList()),
            DecodeSpread = Spread.Of(runs.Select(x => x.DecodeTokS).ToList()),
        };
    }

    public static int Argmax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
