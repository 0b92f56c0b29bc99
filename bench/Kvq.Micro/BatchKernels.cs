using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Kvq.Model.Loading;
using Kvq.Tensors;
using Kvq.Tensors.Quant;

namespace Kvq.Micro;

/// <summary>
/// --quick-rows: the batched decode kernel alone (<see cref="HalfRowBlock.Rows"/>, n activation vectors against every
/// row of a matrix, one thread, data hot in L1/L2) against the kernel it replaced (2 rows x 4 vectors, both
/// accumulators of an output in registers; kept below as <see cref="PairKernel"/>), on each distinct f16 matrix shape
/// of a real model. Interleaved rounds, best of each; results checked bitwise equal. GFMA/s counts scalar
/// multiply-adds (rows x cols x n per call).
/// </summary>
public static unsafe class BatchKernels
{
    private static readonly int Offset = int.TryParse(Environment.GetEnvironmentVariable("KVQ_X_OFFSET"), out var o) ? o : 0;

    public static void Run(string modelPath, int n, int rounds)
    {
        using var weights = GgufModelLoader.Load(modelPath);
        var l0 = weights.Layers[0];
        var mats = new[] { l0.Wq, l0.Wk, l0.WGate!, l0.WDown!, weights.Output }.Where(m => m.Type == GgmlType.F16).ToArray();
        var rng = new Random(5);
        Console.WriteLine($"{Path.GetFileName(modelPath)}, {n} vectors, 1 thread, best of {rounds} interleaved rounds");
        Console.WriteLine("| matrix | rows x cols | 2x4 kernel us | new us | 2x4 GFMA/s | new GFMA/s | new / old speed |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|---:|");
        foreach (var m in mats)
        {
            int k = m.Cols;
            var x = GC.AllocateUninitializedArray<float>(n * k + 16, pinned: true);
            for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
            var yOld = GC.AllocateUninitializedArray<float>(n * m.Rows, pinned: true);
            var yNew = GC.AllocateUninitializedArray<float>(n * m.Rows, pinned: true);
            var scratch = GC.AllocateUninitializedArray<float>(HalfRowBlock.ScratchFloats(k), pinned: true);
            double bestOld = double.MaxValue, bestNew = double.MaxValue;
            int reps = Math.Max(1, 2_000_000 / (m.Rows * k * n / 16));
            fixed (float* px0 = x, po = yOld, pn = yNew)
            {
                // Activations at a chosen offset from a cache line (floats; 0 = aligned): the model's buffers are not aligned.
                float* px = (float*)(((nint)px0 + 63) & ~(nint)63) + Offset;
                for (int round = 0; round < rounds; round++)
                {
                    var sw = Stopwatch.StartNew();
                    for (int i = 0; i < reps; i++) PairKernel.Rows(m.Data, m.RowBytes, m.Rows, k, px, n, po, m.Rows, scratch);
                    bestOld = Math.Min(bestOld, sw.Elapsed.TotalMicroseconds / reps);
                    sw.Restart();
                    for (int i = 0; i < reps; i++) HalfRowBlock.Rows(m.Data, m.RowBytes, m.Rows, k, px, n, pn, m.Rows, scratch, m.FiniteHalf);
                    bestNew = Math.Min(bestNew, sw.Elapsed.TotalMicroseconds / reps);
                }
            }
            for (int i = 0; i < yOld.Length; i++)
                if (BitConverter.SingleToInt32Bits(yOld[i]) != BitConverter.SingleToInt32Bits(yNew[i]))
                    throw new InvalidOperationException($"{m.Name}: output {i} differs: 2x4 {yOld[i]:R}, new {yNew[i]:R}");
            double fma = (double)m.Rows * k * n / 1e3;
            Console.WriteLine($"| {m.Name} | {m.Rows} x {k} | {bestOld:F1} | {bestNew:F1} | {fma / bestOld:F1} | {fma / bestNew:F1} | {bestOld / bestNew:F2}x |");
        }
        double peak = double.MaxValue;
        for (int round = 0; round < rounds; round++)
        {
            var sw = Stopwatch.StartNew();
            float sink = FmaCeiling(20_000);
            peak = Math.Min(peak, sw.Elapsed.TotalMicroseconds);
            if (sink == 1.2345f) Console.Write(' ');
        }
        Console.WriteLine($"FMA ceiling of this core (16 independent zmm chains, registers only): {20_000.0 * 16 * 16 / 1e3 / peak:F1} GFMA/s");
    }

    /// <summary>16 independent 16-lane FMA chains, no memory: the core's multiply-add throughput.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    private static float FmaCeiling(int iterations)
    {
        var m = Vector512.Create(0.999f);
        var a = Vector512.Create(1e-3f);
        Vector512<float> c0 = a, c1 = a, c2 = a, c3 = a, c4 = a, c5 = a, c6 = a, c7 = a;
        Vector512<float> c8 = a, c9 = a, c10 = a, c11 = a, c12 = a, c13 = a, c14 = a, c15 = a;
        for (int i = 0; i < iterations; i++)
        {
            c0 = Avx512F.FusedMultiplyAdd(c0, m, a); c1 = Avx512F.FusedMultiplyAdd(c1, m, a); c2 = Avx512F.FusedMultiplyAdd(c2, m, a); c3 = Avx512F.FusedMultiplyAdd(c3, m, a);
            c4 = Avx512F.FusedMultiplyAdd(c4, m, a); c5 = Avx512F.FusedMultiplyAdd(c5, m, a); c6 = Avx512F.FusedMultiplyAdd(c6, m, a); c7 = Avx512F.FusedMultiplyAdd(c7, m, a);
            c8 = Avx512F.FusedMultiplyAdd(c8, m, a); c9 = Avx512F.FusedMultiplyAdd(c9, m, a); c10 = Avx512F.FusedMultiplyAdd(c10, m, a); c11 = Avx512F.FusedMultiplyAdd(c11, m, a);
            c12 = Avx512F.FusedMultiplyAdd(c12, m, a); c13 = Avx512F.FusedMultiplyAdd(c13, m, a); c14 = Avx512F.FusedMultiplyAdd(c14, m, a); c15 = Avx512F.FusedMultiplyAdd(c15, m, a);
        }
        return Vector512.Sum(c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11 + c12 + c13 + c14 + c15);
    }

    /// <summary>The previous HalfRowBlock kernel (2 rows x 4 vectors, 16 accumulators, rows converted into scratch),
    /// for A/B only; even row counts and n a multiple of 4 are all it handles.</summary>
    private static class PairKernel
    {
        public static void Rows(byte* w, long rowStride, int rows, int k, float* x, int n, float* y, int yStride, Span<float> scratch)
        {
            fixed (float* buf = scratch)
            {
                float* f0 = buf, f1 = buf + k;
                for (int r = 0; r + 2 <= rows; r += 2)
                {
                    HalfDot.ToSingle(new ReadOnlySpan<Half>(w + r * rowStride, k), new Span<float>(f0, k), finite: true);
                    HalfDot.ToSingle(new ReadOnlySpan<Half>(w + (r + 1) * rowStride, k), new Span<float>(f1, k), finite: true);
                    for (int t = 0; t + 4 <= n; t += 4) Dot2x4(f0, f1, k, x + (long)t * k, y + (long)t * yStride + r, yStride);
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void Dot2x4(float* w0, float* w1, int n, float* x, float* y, int yStride)
        {
            float* x0 = x, x1 = x + n, x2 = x + 2 * n, x3 = x + 3 * n;
            Vector512<float> p00 = default, p01 = default, p10 = default, p11 = default, p20 = default, p21 = default, p30 = default, p31 = default;
            Vector512<float> q00 = default, q01 = default, q10 = default, q11 = default, q20 = default, q21 = default, q30 = default, q31 = default;
            int i = 0;
            for (; i + 32 <= n; i += 32)
            {
                var a0 = Vector512.Load(w0 + i); var a1 = Vector512.Load(w0 + i + 16);
                var b0 = Vector512.Load(w1 + i); var b1 = Vector512.Load(w1 + i + 16);
                var v0 = Vector512.Load(x0 + i); var v1 = Vector512.Load(x0 + i + 16);
                p00 = Avx512F.FusedMultiplyAdd(a0, v0, p00); p01 = Avx512F.FusedMultiplyAdd(a1, v1, p01);
                q00 = Avx512F.FusedMultiplyAdd(b0, v0, q00); q01 = Avx512F.FusedMultiplyAdd(b1, v1, q01);
                v0 = Vector512.Load(x1 + i); v1 = Vector512.Load(x1 + i + 16);
                p10 = Avx512F.FusedMultiplyAdd(a0, v0, p10); p11 = Avx512F.FusedMultiplyAdd(a1, v1, p11);
                q10 = Avx512F.FusedMultiplyAdd(b0, v0, q10); q11 = Avx512F.FusedMultiplyAdd(b1, v1, q11);
                v0 = Vector512.Load(x2 + i); v1 = Vector512.Load(x2 + i + 16);
                p20 = Avx512F.FusedMultiplyAdd(a0, v0, p20); p21 = Avx512F.FusedMultiplyAdd(a1, v1, p21);
                q20 = Avx512F.FusedMultiplyAdd(b0, v0, q20); q21 = Avx512F.FusedMultiplyAdd(b1, v1, q21);
                v0 = Vector512.Load(x3 + i); v1 = Vector512.Load(x3 + i + 16);
                p30 = Avx512F.FusedMultiplyAdd(a0, v0, p30); p31 = Avx512F.FusedMultiplyAdd(a1, v1, p31);
                q30 = Avx512F.FusedMultiplyAdd(b0, v0, q30); q31 = Avx512F.FusedMultiplyAdd(b1, v1, q31);
            }
            for (; i + 16 <= n; i += 16)
            {
                var a0 = Vector512.Load(w0 + i);
                var b0 = Vector512.Load(w1 + i);
                var v0 = Vector512.Load(x0 + i);
                p00 = Avx512F.FusedMultiplyAdd(a0, v0, p00); q00 = Avx512F.FusedMultiplyAdd(b0, v0, q00);
                v0 = Vector512.Load(x1 + i);
                p10 = Avx512F.FusedMultiplyAdd(a0, v0, p10); q10 = Avx512F.FusedMultiplyAdd(b0, v0, q10);
                v0 = Vector512.Load(x2 + i);
                p20 = Avx512F.FusedMultiplyAdd(a0, v0, p20); q20 = Avx512F.FusedMultiplyAdd(b0, v0, q20);
                v0 = Vector512.Load(x3 + i);
                p30 = Avx512F.FusedMultiplyAdd(a0, v0, p30); q30 = Avx512F.FusedMultiplyAdd(b0, v0, q30);
            }
            float s0 = Vector512.Sum(p00 + p01), s1 = Vector512.Sum(p10 + p11), s2 = Vector512.Sum(p20 + p21), s3 = Vector512.Sum(p30 + p31);
            float u0 = Vector512.Sum(q00 + q01), u1 = Vector512.Sum(q10 + q11), u2 = Vector512.Sum(q20 + q21), u3 = Vector512.Sum(q30 + q31);
            for (; i < n; i++)
            {
                float a = w0[i], b = w1[i];
                s0 += a * x0[i]; s1 += a * x1[i]; s2 += a * x2[i]; s3 += a * x3[i];
                u0 += b * x0[i]; u1 += b * x1[i]; u2 += b * x2[i]; u3 += b * x3[i];
            }
            y[0] = s0; y[yStride] = s1; y[2L * yStride] = s2; y[3L * yStride] = s3;
            y[1] = u0; y[yStride + 1] = u1; y[2L * yStride + 1] = u2; y[3L * yStride + 1] = u3;
        }
    }
}

/// <summary>
/// --batch-profile: where a batched decode step's time goes (books-19m, n sequences at a context): the step itself
/// (<see cref="Model.Transformer.ForwardBatch"/>), then its weight products alone (every matrix through
/// MatVecRows with n rows, in forward order, the step's threads) and its attention alone (every layer x sequence
/// Attend over the same caches), interleaved rounds, best of each; the rest is norms, RoPE, KV appends, residuals.
/// Each is given in wall time and in the process's CPU time: at 1 thread (no spinning workers) CPU time counts the
/// work done whatever the load, so on a shared machine the 1-thread CPU figures are the ones to compare.
/// </summary>
public static class BatchProfile
{
    public static void Run(string modelPath, int threads, int context, int n, int rounds)
    {
        // KVQ_AB unset or "levers": the A/B of branch batchdec (weight-row prefetch and cheap f16 widening on/off).
        // KVQ_AB=prefetch: the A/B of branch batch14b: weight rows and KV blocks asked for two blocks ahead (KVQ_PF_ROWS,
        // KVQ_PF_KV override the distances) vs one and one (as before); KVQ_AB=nta: KV blocks prefetched non-temporal.
        // Branch batch14's A/B (the parallel rest, KVQ_AB=rest) went with its switch once the parallel rest had won (+5% at
        // 16 and 32 sequences, docs/perf.md).
        string ab = Environment.GetEnvironmentVariable("KVQ_AB") ?? "levers";
        int pfRows = int.Parse(Environment.GetEnvironmentVariable("KVQ_PF_ROWS") ?? "2"), pfKv = int.Parse(Environment.GetEnvironmentVariable("KVQ_PF_KV") ?? "2");
        using var weights = GgufModelLoader.Load(modelPath);
        var par = new Parallelism(threads);
        var model = new Model.Transformer(weights, par, 256);
        var c = weights.Config;
        var rng = new Random(7);
        var cache = new Cache.PagedKvCache(model.KvShape, Cache.KvCacheConfig.Parse("f16"));
        var seqs = new Cache.PagedKvSequence[n];
        var logits = new float[n * c.VocabSize];
        for (int i = 0; i < n; i++)
        {
            seqs[i] = cache.CreateSequence();
            var prompt = new int[context];
            for (int t = 0; t < context; t++) prompt[t] = rng.Next(3, c.VocabSize);
            model.Forward(prompt, seqs[i], logits.AsSpan(0, c.VocabSize));
        }
        var segments = seqs.Select((s, i) => new Model.BatchSegment(s, i, 1, Decode: true, Logits: true)).ToArray();
        var tokens = new int[n];
        var mats = new List<WeightMatrix>();
        foreach (var l in weights.Layers) mats.AddRange([l.Wq, l.Wk, l.Wv, l.Wo, l.WGate!, l.WUp!, l.WDown!]);
        mats.Add(weights.Output);
        var x = new float[n * Math.Max(c.Dim, c.FfnDim)];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        var y = new float[n * c.VocabSize];
        var q = new float[c.QDim];
        for (int i = 0; i < q.Length; i++) q[i] = (float)(rng.NextDouble() * 2 - 1);
        var att = new float[c.QDim];
        const int Steps = 16;
        var proc = Process.GetCurrentProcess();
        var wall = new double[7];
        var cpu = new double[7];
        var together = new Cache.Attention.BatchAttention();
        for (int i = 0; i < n; i++) together.TryAdd(seqs[i], i, 1);
        var qs = new float[n * c.QDim];
        for (int i = 0; i < qs.Length; i++) qs[i] = (float)(rng.NextDouble() * 2 - 1);
        var atts = new float[n * c.QDim];
        Array.Fill(wall, double.MaxValue);
        Array.Fill(cpu, double.MaxValue);
        for (int i = 0; i < 50; i++) { for (int t = 0; t < n; t++) tokens[t] = rng.Next(3, c.VocabSize); model.ForwardBatch(tokens, segments, logits); }
        void Time(int what, Action body)
        {
            proc.Refresh();
            var c0 = proc.TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            for (int s = 0; s < Steps; s++) body();
            wall[what] = Math.Min(wall[what], sw.Elapsed.TotalMicroseconds / Steps);
            proc.Refresh();
            cpu[what] = Math.Min(cpu[what], (proc.TotalProcessorTime - c0).TotalMicroseconds / Steps);
        }
        var argmax = 0;
        for (int round = 0; round < rounds; round++)
        {
            // A/B in one process: the step, its weight products and its attention with this branch's levers (weight
            // rows prefetched a block ahead, f16 tiles without inf/NaN widened the cheap way) on, then off.
            foreach (bool on in new[] { true, false })
            {
                int o = on ? 0 : 3;
                if (ab == "nta") Cache.Attention.BlockAttention.NonTemporalKv = on;
                else if (ab == "prefetch")
                {
                    HalfRowBlock.PrefetchRowBlocks = on ? pfRows : 1;
                    Cache.Attention.BlockAttention.PrefetchBlocks = on ? pfKv : 1;
                }
                else
                {
                    HalfRowBlock.PrefetchNextRows = on;
                    Cache.Attention.HalfTileMath.FiniteWidening = on;
                }
                Time(o, () => { for (int t = 0; t < n; t++) tokens[t] = rng.Next(3, c.VocabSize); model.ForwardBatch(tokens, segments, logits); });
                Time(o + 1, () => { foreach (var m in mats) m.MatVecRows(x.AsSpan(0, n * m.Cols), y.AsSpan(0, n * m.Rows), n, par); });
                Time(o + 2, () => { for (int l = 0; l < c.Layers; l++) together.Attend(l, qs, atts, par); });
            }
            HalfRowBlock.PrefetchNextRows = true;
            Cache.Attention.HalfTileMath.FiniteWidening = true;
            HalfRowBlock.PrefetchRowBlocks = 2;
            Cache.Attention.BlockAttention.NonTemporalKv = false;
            Cache.Attention.BlockAttention.PrefetchBlocks = 2;
            // Greedy sampling of the step's rows (what the engine does after the step; not inside ForwardBatch).
            Time(6, () => { for (int t = 0; t < n; t++) argmax += System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits.AsSpan(t * c.VocabSize, c.VocabSize)); });
        }
        Console.WriteLine($"books-19m, {threads} threads, f16 cache, {n} sequences at context {context}+, best of {rounds} rounds x {Steps} steps (argmax {argmax % 10})");
        Console.WriteLine($"A/B: {ab switch { "prefetch" => $"prefetch distance: weight rows {pfRows} blocks, KV {pfKv} blocks (off: 1 and 1)", "nta" => "KV blocks prefetched non-temporal (off: into L2)", _ => "levers (row prefetch, finite widening)" }}");
        Console.WriteLine("| on/off | step wall us | step CPU us | tok per CPU-s | products CPU us | attention CPU us | rest CPU us |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
        foreach (int o in new[] { 0, 3 })
            Console.WriteLine($"| {(o == 0 ? "on" : "off")} | {wall[o]:F0} | {cpu[o]:F0} | {n * 1e6 / cpu[o]:F0} | {cpu[o + 1]:F0} ({cpu[o + 1] / cpu[o]:P0}) | " +
                              $"{cpu[o + 2]:F0} ({cpu[o + 2] / cpu[o]:P0}) | {cpu[o] - cpu[o + 1] - cpu[o + 2]:F0} |");
        Console.WriteLine($"greedy sampling of {n} rows (outside the step): {cpu[6]:F0} us CPU; load {File.ReadAllText("/proc/loadavg").Trim()}");
    }
}

/// <summary>
/// --batch-steps: only batched decode steps, for <c>perf record</c> (n sequences prefilled to a context, then
/// <c>steps</c> ForwardBatch calls; prints the step's wall and CPU time). With <c>DOTNET_PerfMapEnabled=1</c> the
/// JIT's symbols reach perf, so the samples split by kernel: products, attention, norms/RoPE, hand-offs.
/// </summary>
public static class BatchSteps
{
    public static void Run(string modelPath, int threads, int context, int n, int steps)
    {
        using var weights = GgufModelLoader.Load(modelPath);
        var model = new Model.Transformer(weights, new Parallelism(threads), 256);
        var c = weights.Config;
        var rng = new Random(7);
        // The context stays near `context`: sets of n sequences prefilled to context - 128, each decoding 256 steps in turn
        // (contexts context - 128 .. context + 128).
        const int PerSet = 256;
        int sets = Math.Max(1, (steps + PerSet - 1) / PerSet);
        var cache = new Cache.PagedKvCache(model.KvShape, Cache.KvCacheConfig.Parse("f16"));
        var logits = new float[n * c.VocabSize];
        var all = new Model.BatchSegment[sets][];
        for (int set = 0; set < sets; set++)
        {
            all[set] = new Model.BatchSegment[n];
            for (int i = 0; i < n; i++)
            {
                var seq = cache.CreateSequence();
                var prompt = new int[Math.Max(1, context - PerSet / 2)];
                for (int t = 0; t < prompt.Length; t++) prompt[t] = rng.Next(3, c.VocabSize);
                model.Forward(prompt, seq, logits.AsSpan(0, c.VocabSize));
                all[set][i] = new Model.BatchSegment(seq, i, 1, Decode: true, Logits: true);
            }
        }
        var tokens = new int[n];
        for (int s = 0; s < 30; s++) { for (int t = 0; t < n; t++) tokens[t] = rng.Next(3, c.VocabSize); model.ForwardBatch(tokens, all[0], logits); }
        var proc = Process.GetCurrentProcess();
        proc.Refresh();
        var c0 = proc.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        Console.Error.WriteLine("steps start");
        for (int s = 0; s < steps; s++) { for (int t = 0; t < n; t++) tokens[t] = rng.Next(3, c.VocabSize); model.ForwardBatch(tokens, all[s / PerSet], logits); }
        proc.Refresh();
        double wall = sw.Elapsed.TotalMicroseconds / steps, cpu = (proc.TotalProcessorTime - c0).TotalMicroseconds / steps;
        Console.WriteLine($"books-19m, {threads} threads, f16, {n} sequences at context {context}+, {steps} steps: wall {wall:F0} us/step ({n * 1e6 / wall:F0} tok/s), " +
                          $"cpu {cpu:F0} us/step ({n * 1e6 / cpu:F0} tok/cpu-s); load {File.ReadAllText("/proc/loadavg").Trim()}");
    }
}
