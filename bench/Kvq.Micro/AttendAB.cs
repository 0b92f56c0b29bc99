using System.Diagnostics;
using System.Runtime.InteropServices;
using Kvq.Bench;
using Kvq.Cache;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;

namespace Kvq.Micro;

/// <summary>
/// --quick-attend: a decode token's attention (every layer's <see cref="IKvSequence.Attend"/> for one query token)
/// over a real model's cache after a prompt of <c>ctx</c> tokens, per KV format, in interleaved rounds; each layer's
/// call is timed alone and its best kept (a call is ~0.1-1 ms, short enough that some rounds escape preemption on a
/// loaded machine), and the per-token figure is the sum of the layers' bests. Queries are the model's last prompt
/// token's projections replaced by a seeded random vector (attention's cost does not depend on their values).
/// KV entries take the suffixes of <see cref="DecodeProfile"/> (<c>#base</c>) for A/B runs of one build.
/// </summary>
public static partial class AttendAB
{
    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec { public long Sec, Nsec; }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out TimeSpec t);

    /// <summary>CPU time of the calling thread in ns (CLOCK_THREAD_CPUTIME_ID; Linux): with 1 thread the attention
    /// runs on the caller, so this is the work done, not the time preempted by other processes.</summary>
    private static long ThreadCpuNs() => ClockGetTime(3, out var t) == 0 ? t.Sec * 1_000_000_000L + t.Nsec : 0;

    public static void Run(string modelPath, int threads, int ctx, string[] kvs, string? profilePath, int rounds)
    {
        using var weights = GgufModelLoader.Load(modelPath);
        var par = new Parallelism(threads);
        var model = new Transformer(weights, par);
        var c = weights.Config;
        var profile = profilePath == null ? null : KvQuantProfile.Load(profilePath);
        var prompt = ThroughputBenchmark.PromptTokens(ctx, c.VocabSize);
        var logits = new float[c.VocabSize];
        var seqs = new IKvSequence[kvs.Length];
        for (int i = 0; i < kvs.Length; i++)
        {
            var config = KvCacheConfig.Parse(DecodeProfile.Spec(kvs[i]));
            if (profile != null) config = config with { Profile = profile, SinkTokens = profile.Settings.SinkTokens };
            seqs[i] = model.CreateSequence(config, ctx + 1);
            model.Forward(prompt, seqs[i], logits);
        }
        var rng = new Random(11);
        var q = new float[c.QDim];
        for (int j = 0; j < q.Length; j++) q[j] = (float)(rng.NextDouble() * 2 - 1);
        var o = new float[c.QDim];
        var best = new double[kvs.Length, c.Layers];
        for (int i = 0; i < kvs.Length; i++) for (int l = 0; l < c.Layers; l++) best[i, l] = double.MaxValue;
        var check = new float[kvs.Length];
        var cpu = new double[kvs.Length, rounds];   // thread CPU us of a round's 8 layers (1 thread: the caller's)
        for (int round = 0; round < rounds; round++)
            for (int i = 0; i < kvs.Length; i++)
            {
                DecodeProfile.Switch(kvs[i]);
                long c0 = ThreadCpuNs();
                for (int l = 0; l < c.Layers; l++)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    seqs[i].Attend(l, q, 1, o, par);
                    best[i, l] = Math.Min(best[i, l], Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
                    check[i] += o[l];
                }
                cpu[i, round] = (ThreadCpuNs() - c0) / 1e3;
            }
        Console.WriteLine($"{Path.GetFileName(modelPath)}, ctx {ctx}, {threads} thread(s), best of {rounds} rounds per layer; load {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine("| kv | attention us/token (sum of layers' best wall) | ns per cached token and KV head | thread CPU us/token (min / median of rounds) | CPU ns per cached token and KV head (median) |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        double perToken = (double)ctx * c.Layers * c.KvHeads;
        for (int i = 0; i < kvs.Length; i++)
        {
            double sum = 0;
            for (int l = 0; l < c.Layers; l++) sum += best[i, l];
            var r = new double[rounds];
            for (int k = 0; k < rounds; k++) r[k] = cpu[i, k];
            Array.Sort(r);
            double med = r[rounds / 2];
            Console.WriteLine($"| {kvs[i]} | {sum:F1} | {sum * 1e3 / perToken:F2} | {r[0]:F1} / {med:F1} | {med * 1e3 / perToken:F2} |");
        }
        DecodeProfile.Switch("");
        foreach (var s in seqs) (s as IDisposable)?.Dispose();
    }
}
