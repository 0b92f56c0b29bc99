using System.Diagnostics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Kvq.Bench;
using Kvq.Cache;
using Kvq.Model;
using Kvq.Model.Loading;
using Kvq.Tensors;

namespace Kvq.Micro;

/// <summary>
/// --decode-profile: where a decode token's time goes. One decode step of <see cref="Transformer"/> is replayed op
/// by op (the same calls in the same order, so the same bytes stream through the caches) with a timestamp around
/// each, after a prompt of <c>ctx</c> tokens; the replica's logits are checked bitwise against the model's own
/// Forward on a twin sequence, and the model's own step is timed in the same rounds, so the table sums to a figure
/// it can be compared with. Several KV formats (comma-separated) are run in interleaved rounds in one process, so
/// their ratio comes from the same minutes. Per op: the wall time (median over the steps of the best round: load
/// only adds time) and the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID, median over all steps of all rounds;
/// at 1 thread every op runs on the caller, so this is the work done, not the time preempted by other processes).
/// With the environment variable KVQ_PERF_FIFO naming a <c>perf record --control fifo:PATH -D -1</c> control fifo,
/// perf is enabled around the replica's decode steps of every round (the prefills left out).
/// </summary>
public static partial class DecodeProfile
{
    private enum Op { Embed, BeginChunk, Norms, Wq, Wk, Wv, Rope, Append, Attend, Wo, Residual, Gate, Up, SwiGlu, Down, Commit, Output, Sample, Count }

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec { public long Sec, Nsec; }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out TimeSpec t);

    /// <summary>CPU time of the calling thread in ns (CLOCK_THREAD_CPUTIME_ID = 3; Linux).</summary>
    private static long ThreadCpuNs() => ClockGetTime(3, out var t) == 0 ? t.Sec * 1_000_000_000L + t.Nsec : 0;

    public static void Run(string modelPath, int threads, int ctx, int steps, string kvList, int rounds, string? profile = null)
    {
        using var weights = GgufModelLoader.Load(modelPath);
        if (weights.Layers.Any(l => l.WGate == null))
            throw new NotSupportedException($"{modelPath}: the decode profile replays dense feed-forward layers only (this model has experts)");
        var par = new Parallelism(threads);
        var model = new Transformer(weights, par);
        var c = weights.Config;
        var kvs = kvList.Split(',');
        var configs = new KvCacheConfig[kvs.Length];
        var p = profile != null ? Cache.Codecs.KvQuant.KvQuantProfile.Load(profile) : null;
        for (int i = 0; i < kvs.Length; i++)
        {
            configs[i] = KvCacheConfig.Parse(Spec(kvs[i]));
            if (p != null) configs[i] = configs[i] with { Profile = p, SinkTokens = p.Settings.SinkTokens };
            Switch(kvs[i]);
            ThroughputBenchmark.WarmUp(model, Path.GetFileName(modelPath), Math.Min(ctx, 256), configs[i]);
        }
        var replica = new Replica(model);
        var prompt = ThroughputBenchmark.PromptTokens(ctx, c.VocabSize);
        var logits = new float[c.VocabSize];
        var twinLogits = new float[c.VocabSize];
        int ops = (int)Op.Count;
        var perOp = new long[steps, ops];
        var cpuOp = new long[steps, ops];
        var cpuAll = new List<long>[kvs.Length, ops];
        for (int i = 0; i < kvs.Length; i++) for (int op = 0; op < ops; op++) cpuAll[i, op] = [];
        var stepCpu = new List<double>[kvs.Length];   // thread CPU of Transformer.Forward per token, every round
        var bestReplica = new double[kvs.Length];
        var bestModel = new double[kvs.Length];
        Array.Fill(bestReplica, double.MaxValue);
        Array.Fill(bestModel, double.MaxValue);
        var bestMedians = new long[kvs.Length, ops];
        string? fifo = Environment.GetEnvironmentVariable("KVQ_PERF_FIFO");
        for (int i = 0; i < kvs.Length; i++) stepCpu[i] = [];
        Console.WriteLine("warm-up done");
        for (int round = 0; round < rounds; round++)
            for (int i = 0; i < kvs.Length; i++)
            {
                Switch(kvs[i]);
                var seq = model.CreateSequence(configs[i], ctx + steps);
                var twin = model.CreateSequence(configs[i], ctx + steps);
                model.Forward(prompt, seq, logits);
                model.Forward(prompt, twin, twinLogits);
                Array.Clear(perOp);
                Array.Clear(cpuOp);
                bool perf = fifo != null;
                if (perf) PerfControl(fifo!, "enable");
                long t0 = Stopwatch.GetTimestamp();
                int token = ThroughputBenchmark.Argmax(logits);
                for (int s = 0; s < steps; s++) token = replica.Step(token, seq, logits, perOp, cpuOp, s);
                double replicaS = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                if (perf) PerfControl(fifo!, "disable");
                // The model's own decode over the same tokens on the twin: timed, and checked bitwise at the end.
                t0 = Stopwatch.GetTimestamp();
                var one = new int[1];
                for (int s = 0; s < steps; s++)
                {
                    one[0] = ThroughputBenchmark.Argmax(twinLogits);
                    long c0 = ThreadCpuNs();
                    model.Forward(one, twin, twinLogits);
                    stepCpu[i].Add((ThreadCpuNs() - c0) / 1e3);
                }
                double modelS = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                if (!logits.AsSpan().SequenceEqual(twinLogits)) throw new InvalidOperationException("the replica's logits differ from Transformer.Forward's");
                (seq as IDisposable)?.Dispose();
                (twin as IDisposable)?.Dispose();
                for (int s = 0; s < steps; s++) for (int op = 0; op < ops; op++) cpuAll[i, op].Add(cpuOp[s, op]);
                if (replicaS < bestReplica[i])
                {
                    bestReplica[i] = replicaS;
                    for (int op = 0; op < ops; op++)
                    {
                        var col = new long[steps];
                        for (int s = 0; s < steps; s++) col[s] = perOp[s, op];
                        Array.Sort(col);
                        bestMedians[i, op] = col[steps / 2];
                    }
                }
                bestModel[i] = Math.Min(bestModel[i], modelS);
            }
        double us(long ticks) => ticks * 1e6 / Stopwatch.Frequency;
        static double Median(List<long> xs) { var a = xs.ToArray(); Array.Sort(a); return a.Length == 0 ? 0 : a[a.Length / 2] / 1e3; }
        static double MedianD(List<double> xs) { var a = xs.ToArray(); Array.Sort(a); return a.Length == 0 ? 0 : a[a.Length / 2]; }
        Console.WriteLine($"{Path.GetFileName(modelPath)}, ctx {ctx}, {threads} thread(s), {steps} decode steps, {rounds} interleaved rounds; " +
                          $"load {File.ReadAllText("/proc/loadavg").Trim()}");
        for (int i = 0; i < kvs.Length; i++)
        {
            double sum = 0, cpuSum = 0;
            for (int op = 0; op < ops; op++) { sum += us(bestMedians[i, op]); cpuSum += Median(cpuAll[i, op]); }
            Console.WriteLine($"kv {kvs[i]}: Transformer.Forward best {bestModel[i] * 1e6 / steps:F0} us/token wall ({steps / bestModel[i]:F0} tok/s), " +
                              $"thread CPU median {MedianD(stepCpu[i]):F0} us/token; replica best {bestReplica[i] * 1e6 / steps:F0} us/token; " +
                              $"sums of per-op medians: wall {sum:F0} us, thread CPU {cpuSum:F0} us");
        }
        Console.WriteLine($"| op | {string.Join(" | ", kvs.Select(k => $"{k} wall us | {k} CPU us | {k} CPU share"))} | {(kvs.Length > 1 ? $"CPU {kvs[1]} - {kvs[0]} us |" : "")} weight MB/token |");
        Console.WriteLine($"|---|{string.Concat(Enumerable.Repeat("---:|---:|---:|", kvs.Length))}{(kvs.Length > 1 ? "---:|" : "")}---:|");
        var cpuSums = Enumerable.Range(0, kvs.Length).Select(i => Enumerable.Range(0, ops).Sum(op => Median(cpuAll[i, op]))).ToArray();
        for (int op = 0; op < ops; op++)
        {
            double mb = replica.BytesOf((Op)op) / 1e6;
            var cells = Enumerable.Range(0, kvs.Length).Select(i =>
                $"{us(bestMedians[i, op]):F1} | {Median(cpuAll[i, op]):F1} | {Median(cpuAll[i, op]) / cpuSums[i]:P1}");
            string diff = kvs.Length > 1 ? $" {Median(cpuAll[1, op]) - Median(cpuAll[0, op]):+0.0;-0.0} |" : "";
            Console.WriteLine($"| {(Op)op} | {string.Join(" | ", cells)} |{diff} {(mb > 0 ? mb.ToString("F2") : "")} |");
        }
    }

    /// <summary>A KV entry ending in this runs with <see cref="Cache.Attention.BlockAttention.PrefetchOutlierRows"/> off
    /// (the build's A/B in one process).</summary>
    private const string BaseSuffix = "#base";

    // The #old and #s11 switches (masks in a register, session 12's register-kernel paths) were settled by session 13's
    // A/B (the new paths won by 2-4% of attention CPU) and removed with their slower arms.
    internal static string Spec(string entry) => entry.EndsWith(BaseSuffix) ? entry[..^BaseSuffix.Length] : entry;

    /// <summary>Sets the library's A/B switches for a KV entry (all on unless its suffix turns some off).</summary>
    internal static void Switch(string entry) =>
        Cache.Attention.BlockAttention.PrefetchOutlierRows = !entry.EndsWith(BaseSuffix);

    private static void PerfControl(string fifo, string command)
    {
        File.WriteAllText(fifo, command + "\n");
        Thread.Sleep(20);   // perf acts on the command asynchronously
    }

    /// <summary>Transformer.ForwardChunk + Logits for one token, with a timestamp between ops.</summary>
    private sealed class Replica(Transformer m)
    {
        private readonly ModelConfig _c = m.Config;
        private readonly Rope _rope = m.Config.CreateRope();
        private readonly float[] _x = new float[m.Config.Dim], _xn = new float[m.Config.Dim], _q = new float[m.Config.QDim];
        private readonly float[] _k = new float[m.Config.KvDim], _v = new float[m.Config.KvDim], _att = new float[m.Config.QDim];
        private readonly float[] _proj = new float[m.Config.Dim], _gate = new float[m.Config.FfnDim], _up = new float[m.Config.FfnDim];

        public long BytesOf(Op op)
        {
            var ls = m.Weights.Layers;
            return op switch
            {
                Op.Wq => ls.Sum(l => l.Wq.ByteSize),
                Op.Wk => ls.Sum(l => l.Wk.ByteSize),
                Op.Wv => ls.Sum(l => l.Wv.ByteSize),
                Op.Wo => ls.Sum(l => l.Wo.ByteSize),
                Op.Gate => ls.Sum(l => l.WGate!.ByteSize),
                Op.Up => ls.Sum(l => l.WUp!.ByteSize),
                Op.Down => ls.Sum(l => l.WDown!.ByteSize),
                Op.Output => m.Weights.Output.ByteSize,
                _ => 0,
            };
        }

        public int Step(int token, IKvSequence kv, float[] logits, long[,] perOp, long[,] cpuOp, int s)
        {
            var par = m.Parallelism;
            var c = _c;
            long t = Stopwatch.GetTimestamp(), cpu = ThreadCpuNs();
            void Mark(Op op)
            {
                long now = Stopwatch.GetTimestamp(), nowCpu = ThreadCpuNs();
                perOp[s, (int)op] += now - t;
                cpuOp[s, (int)op] += nowCpu - cpu;
                t = now;
                cpu = nowCpu;
            }
            m.Weights.TokenEmbedding.DequantizeRow(token, _x);
            int pos = kv.Length;
            Mark(Op.Embed);
            kv.BeginChunk([token]);
            Mark(Op.BeginChunk);
            for (int l = 0; l < c.Layers; l++)
            {
                var w = m.Weights.Layers[l];
                Kernels.RmsNorm(_x, w.AttnNorm, c.NormEps, _xn);
                Mark(Op.Norms);
                w.Wq.MatVec(_xn, _q, par);
                Mark(Op.Wq);
                w.Wk.MatVec(_xn, _k, par);
                Mark(Op.Wk);
                w.Wv.MatVec(_xn, _v, par);
                Mark(Op.Wv);
                if (w.Bq != null) TensorPrimitives.Add(_q, w.Bq, _q);
                if (w.Bk != null) TensorPrimitives.Add(_k, w.Bk, _k);
                if (w.Bv != null) TensorPrimitives.Add(_v, w.Bv, _v);
                _rope.RotateHeads(_q, c.Heads, pos);
                Mark(Op.Rope);
                kv.Append(l, _k, _v, 1);
                Mark(Op.Append);
                kv.Attend(l, _q, 1, _att, par);
                Mark(Op.Attend);
                w.Wo.MatVec(_att, _proj, par);
                Mark(Op.Wo);
                TensorPrimitives.Add(_x, _proj, _x);
                Mark(Op.Residual);
                Kernels.RmsNorm(_x, w.FfnNorm, c.NormEps, _xn);
                Mark(Op.Norms);
                w.WGate!.MatVec(_xn, _gate, par);
                Mark(Op.Gate);
                w.WUp!.MatVec(_xn, _up, par);
                Mark(Op.Up);
                Kernels.SwiGlu(_gate, _up);
                Mark(Op.SwiGlu);
                w.WDown!.MatVec(_gate, _proj, par);
                Mark(Op.Down);
                TensorPrimitives.Add(_x, _proj, _x);
                Mark(Op.Residual);
            }
            kv.Commit(1);
            Mark(Op.Commit);
            Kernels.RmsNorm(_x, m.Weights.OutputNorm, c.NormEps, _xn);
            Mark(Op.Norms);
            m.Weights.Output.MatVec(_xn, logits, par);
            Mark(Op.Output);
            int next = ThroughputBenchmark.Argmax(logits);
            Mark(Op.Sample);
            return next;
        }
    }
}
