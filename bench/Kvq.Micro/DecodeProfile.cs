using System.Diagnostics;
using System.Numerics.Tensors;
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
/// it can be compared with. Per-op times are the median over the steps of the best round (load only adds time).
/// </summary>
public static class DecodeProfile
{
    private enum Op { Embed, Norms, Wq, Wk, Wv, Rope, Append, Attend, Wo, Residual, Gate, Up, SwiGlu, Down, Output, Sample, Count }

    public static void Run(string modelPath, int threads, int ctx, int steps, string kv, int rounds, string? profile = null)
    {
        using var weights = GgufModelLoader.Load(modelPath);
        if (weights.Layers.Any(l => l.WGate == null))
            throw new NotSupportedException($"{modelPath}: the decode profile replays dense feed-forward layers only (this model has experts)");
        var par = new Parallelism(threads);
        var model = new Transformer(weights, par);
        var c = weights.Config;
        var config = KvCacheConfig.Parse(kv);
        if (profile != null)
        {
            var p = Cache.Codecs.KvQuant.KvQuantProfile.Load(profile);
            config = config with { Profile = p, SinkTokens = p.Settings.SinkTokens };
        }
        ThroughputBenchmark.WarmUp(model, Path.GetFileName(modelPath), ctx, config);
        var replica = new Replica(model);
        var prompt = ThroughputBenchmark.PromptTokens(ctx, c.VocabSize);
        var logits = new float[c.VocabSize];
        var twinLogits = new float[c.VocabSize];
        var perOp = new long[steps, (int)Op.Count];
        double bestReplica = double.MaxValue, bestModel = double.MaxValue;
        long[] bestMedians = new long[(int)Op.Count];
        for (int round = 0; round < rounds; round++)
        {
            var seq = model.CreateSequence(config, ctx + steps);
            var twin = model.CreateSequence(config, ctx + steps);
            model.Forward(prompt, seq, logits);
            model.Forward(prompt, twin, twinLogits);
            Array.Clear(perOp);
            long t0 = Stopwatch.GetTimestamp();
            int token = ThroughputBenchmark.Argmax(logits);
            for (int s = 0; s < steps; s++) token = replica.Step(token, seq, logits, perOp, s);
            double replicaS = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            // The model's own decode over the same tokens on the twin: timed, and checked bitwise at the end.
            t0 = Stopwatch.GetTimestamp();
            var one = new int[1];
            for (int s = 0; s < steps; s++)
            {
                one[0] = ThroughputBenchmark.Argmax(twinLogits);
                model.Forward(one, twin, twinLogits);
            }
            double modelS = Stopwatch.GetElapsedTime(t0).TotalSeconds;
            if (!logits.AsSpan().SequenceEqual(twinLogits)) throw new InvalidOperationException("the replica's logits differ from Transformer.Forward's");
            (seq as IDisposable)?.Dispose();
            (twin as IDisposable)?.Dispose();
            if (replicaS < bestReplica)
            {
                bestReplica = replicaS;
                for (int op = 0; op < (int)Op.Count; op++)
                {
                    var col = new long[steps];
                    for (int s = 0; s < steps; s++) col[s] = perOp[s, op];
                    Array.Sort(col);
                    bestMedians[op] = col[steps / 2];
                }
            }
            bestModel = Math.Min(bestModel, modelS);
        }
        double us(long ticks) => ticks * 1e6 / Stopwatch.Frequency;
        double sum = bestMedians.Sum(us);
        Console.WriteLine($"{Path.GetFileName(modelPath)}, kv {kv}, ctx {ctx}, {threads} thread(s), {steps} decode steps, best of {rounds} rounds; " +
                          $"load {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine($"Transformer.Forward: {bestModel * 1e6 / steps:F0} us/token ({steps / bestModel:F0} tok/s); replica: {bestReplica * 1e6 / steps:F0} us/token; " +
                          $"sum of per-op medians: {sum:F0} us");
        Console.WriteLine("| op | us/token (median) | share | weight MB/token | GB/s |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        for (int op = 0; op < (int)Op.Count; op++)
        {
            double t = us(bestMedians[op]);
            double mb = replica.BytesOf((Op)op) / 1e6;
            Console.WriteLine($"| {(Op)op} | {t:F1} | {t / sum:P1} | {(mb > 0 ? mb.ToString("F2") : "")} | {(mb > 0 ? (mb / 1e3 / (t * 1e-6)).ToString("F1") : "")} |");
        }
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

        public int Step(int token, IKvSequence kv, float[] logits, long[,] perOp, int s)
        {
            var par = m.Parallelism;
            var c = _c;
            long t = Stopwatch.GetTimestamp();
            void Mark(Op op)
            {
                long now = Stopwatch.GetTimestamp();
                perOp[s, (int)op] += now - t;
                t = now;
            }
            m.Weights.TokenEmbedding.DequantizeRow(token, _x);
            int pos = kv.Length;
            kv.BeginChunk([token]);
            Mark(Op.Embed);
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
