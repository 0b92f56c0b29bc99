using System.Diagnostics;
using Kvq.Cache;
using Kvq.Cuda.Model;
using Kvq.Model;
using static Kvq.Bench.ThroughputBenchmark;

namespace Kvq.ModelCheck;

/// <summary>
/// <c>--batch</c>: <see cref="CudaTransformer.ForwardBatch"/> against separate <see cref="ILanguageModel.Forward"/>
/// calls. Four sequences (prompts of 37, 100, 5 and 64 tokens, 6 logit rows each) run alone, then together in
/// batched steps of at most 48 tokens that mix decode rows with prompt chunks (as the serving engine schedules them),
/// the decode inputs being the lone runs' greedy tokens: every logit row compared (rel L2) and its argmax. Also: a
/// batch of one decode row gives the lone Forward's logits bitwise, and a sequence copied on the device
/// (<see cref="CudaKvSequence.CopyFrom"/>) continues bitwise as its source.
/// </summary>
internal static class BatchCheck
{
    private static readonly int[] PromptLengths = [37, 100, 5, 64];

    /// <summary>Every check: books-19m with f32 and f16 weights (f16 cache in one shared pool, hand-made nuq4-1% in the
    /// model's generic layout, the profile's nuq3-1% when given), then the 7B shape (random f16 weights; f16, nuq4-1% in
    /// the contiguous decode layout and nuq4-1%* in the model's layout).</summary>
    public static int RunAll(string modelPath, string profilePath, int sink)
    {
        int failures = 0;
        using (var loaded = ModelLoader.Load(modelPath))
        {
            var cfg = loaded.Weights.Config;
            foreach (var wt in new[] { CudaWeightType.F32, CudaWeightType.F16 })
            {
                using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(wt, MaxBatch: 64));
                Console.WriteLine($"\n== batched steps, books-19m on {gpu.Device}");
                bool f32 = wt == CudaWeightType.F32;
                var kv16 = new KvCacheConfig("f16", "f16");
                using (var pool = gpu.CreateCache(kv16, 4096))
                    failures += Run($"{wt} weights, f16 cache (one pool)", gpu, _ => pool.CreateSequence(256), f32 ? 1e-4 : 2e-2, f32);
                failures += Run($"{wt} weights, nuq4-1% (hand-made codecs, model layout)", gpu,
                    _ => gpu.CreateKvQuantSequence(_ => SevenB.Codecs("nuq4-1%", cfg.KvHeads, cfg.HeadDim), sink, 256), f32 ? 1e-2 : 2e-2, f32, quantized: true);
                if (profilePath.Length > 0)
                {
                    var cfgN = new KvCacheConfig("nuq3-1%", "nuq3-1%", 32, sink, Cache.Codecs.KvQuant.KvQuantProfileFile.Read(profilePath));
                    using var pool = gpu.CreateCache(cfgN, 4096);
                    failures += Run($"{wt} weights, nuq3-1% (profile, one pool)", gpu, _ => pool.CreateSequence(256), f32 ? 1e-2 : 2e-2, f32, quantized: true);
                }
            }
        }
        using (var model = CudaTransformer.CreateRandom(SevenB.Config, new CudaModelOptions(CudaWeightType.F16, MaxBatch: 512)))
        {
            Console.WriteLine($"\n== batched steps, 7B shape (random f16 weights) on {model.Device}");
            failures += Run("7B f16 cache", model, _ => (CudaKvSequence)model.CreateSequence(new KvCacheConfig("f16", "f16"), 256), 2e-2, false);
            foreach (var kv in new[] { "nuq4-1%", "nuq4-1%*" })
                failures += Run($"7B {kv} ({(kv.EndsWith('*') ? "model" : "contiguous decode")} layout)", model,
                    _ => model.CreateKvQuantSequence(_ => SevenB.Codecs(kv.TrimEnd('*')), 1, 256, contiguousNuq: !kv.EndsWith('*')), 2e-2, false, quantized: true);
        }
        Console.WriteLine(failures == 0 ? "\nbatch: all checks passed" : $"\nbatch: {failures} check(s) FAILED");
        return failures == 0 ? 0 : 1;
    }
    private const int Rows = 6, Budget = 48;

    /// <summary>Each sequence's prompt chunks in the batched steps of <see cref="Run"/>: decode rows first, then prompt
    /// chunks of at most 29 tokens in sequence order while the step has room.</summary>
    internal static List<int>[] Schedule(int[] lengths)
    {
        int s = lengths.Length;
        var chunks = Enumerable.Range(0, s).Select(_ => new List<int>()).ToArray();
        var done = new int[s];
        var got = new int[s];
        while (got.Any(g => g < Rows))
        {
            int n = 0;
            for (int i = 0; i < s; i++)
                if (done[i] == lengths[i] && got[i] > 0 && got[i] < Rows) { n++; got[i]++; }
            for (int i = 0; i < s && n < Budget; i++)
                if (done[i] < lengths[i])
                {
                    int m = Math.Min(Math.Min(29, lengths[i] - done[i]), Budget - n);
                    chunks[i].Add(m);
                    done[i] += m;
                    n += m;
                    if (done[i] == lengths[i]) got[i]++;
                }
        }
        return chunks;
    }

    /// <summary>Runs the checks on one model and cache kind; returns the failures.</summary>
    /// <param name="quantized">A quantized cache: the tolerance is at least 3x what chunking alone moves the logits (the
    /// f16 products of a batch round differently from a lone row's, a code flips at a threshold now and then, and on a
    /// deep model the flips compound), and greedy agreement is reported, not required.</param>
    public static int Run(string label, CudaTransformer model, Func<int, CudaKvSequence> make, double tolerance, bool greedyMustAgree,
        bool quantized = false)
    {
        int vocab = model.Config.VocabSize, s = PromptLengths.Length;
        var rng = new Random(17);
        var prompts = PromptLengths.Select(n => Enumerable.Range(0, n).Select(i => i == 0 ? 1 : rng.Next(3, vocab)).ToArray()).ToArray();
        // Alone: the prompt in the chunks the batched steps will give it, then Rows - 1 greedy decode steps; the logits
        // of each. Then the same tokens with the prompt in one Forward (the model's own chunks): how far chunking alone
        // moves the logits (quantized caches amplify f32 rounding differences: a code flips at a threshold).
        var chunks = Schedule(PromptLengths);
        var want = new float[s][][];
        var whole = new float[s][][];
        var greedy = new int[s][];
        for (int i = 0; i < s; i++)
        {
            want[i] = new float[Rows][];
            whole[i] = new float[Rows][];
            greedy[i] = new int[Rows];
            var logits = new float[vocab];
            using (var seq = make(i))
            {
                int at = 0;
                foreach (int m in chunks[i])
                {
                    model.Forward(prompts[i].AsSpan(at, m), seq, logits);
                    at += m;
                }
                for (int r = 0; r < Rows; r++)
                {
                    want[i][r] = (float[])logits.Clone();
                    greedy[i][r] = Argmax(logits);
                    if (r + 1 < Rows) model.Forward([greedy[i][r]], seq, logits);
                }
            }
            using (var seq = make(i))
            {
                model.Forward(prompts[i], seq, logits);
                for (int r = 0; r < Rows; r++)
                {
                    whole[i][r] = (float[])logits.Clone();
                    if (r + 1 < Rows) model.Forward([greedy[i][r]], seq, logits);
                }
            }
        }
        double chunkNum = 0, chunkDen = 0;
        for (int i = 0; i < s; i++)
            for (int r = 0; r < Rows; r++)
                for (int v = 0; v < vocab; v++)
                {
                    double d = (double)whole[i][r][v] - want[i][r][v];
                    chunkNum += d * d;
                    chunkDen += (double)want[i][r][v] * want[i][r][v];
                }
        // Together: decode rows first, then prompt chunks of at most 29 tokens, under the step budget.
        var seqs = Enumerable.Range(0, s).Select(make).ToArray();
        double num = 0, den = 0;
        int agree = 0, total = 0, steps = 0, mixed = 0;
        var done = new int[s];
        var got = new int[s];
        var tokens = new int[Budget];
        var segs = new BatchSegment[s];
        var owner = new int[s];
        var outLogits = new float[s * vocab];
        try
        {
            while (got.Any(g => g < Rows))
            {
                int rows = 0, n = 0, decodes = 0;
                for (int i = 0; i < s; i++)
                    if (done[i] == prompts[i].Length && got[i] > 0 && got[i] < Rows)
                    {
                        tokens[n] = greedy[i][got[i] - 1];
                        owner[rows] = i;
                        segs[rows++] = new BatchSegment(seqs[i], n++, 1, Decode: true, Logits: true);
                        decodes++;
                    }
                for (int i = 0; i < s && n < Budget; i++)
                    if (done[i] < prompts[i].Length)
                    {
                        int m = Math.Min(Math.Min(29, prompts[i].Length - done[i]), Budget - n);
                        prompts[i].AsSpan(done[i], m).CopyTo(tokens.AsSpan(n));
                        done[i] += m;
                        owner[rows] = i;
                        segs[rows++] = new BatchSegment(seqs[i], n, m, Decode: false, Logits: done[i] == prompts[i].Length);
                        n += m;
                    }
                model.ForwardBatch(tokens.AsSpan(0, n), segs.AsSpan(0, rows), outLogits);
                steps++;
                if (decodes > 0 && rows > decodes) mixed++;
                int w = 0;
                for (int r = 0; r < rows; r++)
                {
                    if (!segs[r].Logits) continue;
                    int i = owner[r];
                    var row = outLogits.AsSpan(w++ * vocab, vocab);
                    var reference = want[i][got[i]];
                    for (int v = 0; v < vocab; v++)
                    {
                        double d = (double)row[v] - reference[v];
                        num += d * d;
                        den += (double)reference[v] * reference[v];
                    }
                    if (Argmax(row) == greedy[i][got[i]]) agree++;
                    total++;
                    got[i]++;
                }
            }
        }
        finally
        {
            foreach (var q in seqs) q.Dispose();
        }
        double rel = Math.Sqrt(num / den), chunking = Math.Sqrt(chunkNum / chunkDen);
        if (quantized)
        {
            tolerance = Math.Max(tolerance, 3 * chunking);
            greedyMustAgree = false;
        }
        bool ok = rel <= tolerance && (agree == total || !greedyMustAgree);
        Console.WriteLine($"check batch {label}: {s} sequences in {steps} batched steps ({mixed} mixing decode rows and prompt chunks) vs each alone " +
                          $"(same chunks): logits rel L2 {rel:E2} (tolerance {tolerance:E1}) over {total} rows, greedy tokens equal {agree}/{total}: " +
                          $"{(ok ? "ok" : "FAIL")}; for scale, alone in other chunks vs alone: rel L2 {chunking:E2}");
        int failures = ok ? 0 : 1;

        // A batch of one decode row vs the lone Forward; a device copy of a sequence vs its source.
        using (var a = make(0))
        using (var b = make(0))
        using (var c = make(0))
        {
            var la = new float[vocab];
            var lb = new float[vocab];
            var lc = new float[vocab];
            model.Forward(prompts[1], a, la);
            model.Forward(prompts[1], b, lb);
            c.CopyFrom(b);
            int next = Argmax(la);
            model.Forward([next], a, la);
            model.ForwardBatch([next], [new BatchSegment(b, 0, 1, Decode: true, Logits: true)], lb);
            model.ForwardBatch([next], [new BatchSegment(c, 0, 1, Decode: true, Logits: true)], lc);
            bool one = la.AsSpan().SequenceEqual(lb), copy = lb.AsSpan().SequenceEqual(lc) && c.Length == b.Length;
            if (!one || !copy) failures++;
            Console.WriteLine($"check batch {label}: one decode row batched vs lone Forward: {(one ? "identical" : "DIFFERENT")}; " +
                              $"device copy of a {prompts[1].Length}-token sequence continues as its source: {(copy ? "identical" : "DIFFERENT")}: " +
                              $"{(one && copy ? "ok" : "FAIL")}");
        }
        return failures;
    }
}

/// <summary>
/// <c>--sevenb-batch CTX</c>: the serving row of issue 14 on the 7B-shaped model (random f16 weights): per KV format,
/// the largest number of CTX-token sequences whose device caches fit in a byte budget (default 70 GB) minus the
/// weights, from one sequence's exact device bytes; all of them allocated (the proof); sequence 0 prefilled through
/// the model, the others device copies of it (<see cref="CudaKvSequence.CopyFrom"/>: decode reads the same bytes
/// whatever the tokens were); then batched decode steps, every sequence one token per step, timed. With
/// <c>--batch-pool</c> the timed sequences are copies of sequence 0 in one paged pool (f16, or nuqB-1%* in the model's
/// layout): a step's decode rows then go through one append and one attention launch a layer (Model/DecodeRows), where
/// sequences of caches of their own launch theirs one by one; the run without the flag is the comparison.
/// </summary>
internal static class ServingBatch
{
    public static int Run(int ctx, int steps, string[] formats, double budgetGb, int maxBatch, bool pooled = false)
    {
        if (steps < 1 || 3 * (steps + 2) > Slack) throw new ArgumentOutOfRangeException(nameof(steps), steps, $"1 to {Slack / 3 - 2} timed steps");
        var c = SevenB.Config;
        var sw = Stopwatch.StartNew();
        using var model = CudaTransformer.CreateRandom(c, new CudaModelOptions(CudaWeightType.F16, MaxBatch: 512));
        model.TensorCorePrefill = true;
        var ctxInfo = model.DeviceInfo;
        long budget = (long)(budgetGb * 1e9);
        Console.WriteLine($"7B-shaped model, random f16 weights on {model.Device}: {model.WeightBytes / 1e9:F2} GB, made in {sw.ElapsedMilliseconds} ms; " +
                          $"budget {budgetGb:F0} GB = weights + KV of N sequences of {ctx} tokens (+{Slack} decode slots each)");
        int failures = 0, f16Batch = 0;
        double f16TokS = 0;
        CudaKvCache? pool = null;
        foreach (var kv in formats)
        {
            CudaKvSequence Make() => kv == "f16"
                ? (CudaKvSequence)model.CreateSequence(new KvCacheConfig("f16", "f16"), ctx + Slack)
                : model.CreateKvQuantSequence(_ => SevenB.Codecs(kv.TrimEnd('*')), 1, ctx + Slack, contiguousNuq: !kv.EndsWith('*'));
            var seqs = new List<CudaKvSequence>();
            try
            {
                // One sequence's footprint: what the device lost to it (cuMemGetInfo, allocation pages included) once
                // it was made and prefilled (its lazily made attention buffers too), at least the bytes it holds.
                long before = model.DeviceMemory().Free;
                var first = Make();
                seqs.Add(first);
                var t = Stopwatch.StartNew();
                var prompt = PromptTokens(ctx, c.VocabSize);
                var logits = new float[c.VocabSize];
                model.Forward(prompt, first, logits);
                double prefill = ctx / t.Elapsed.TotalSeconds;
                long perSeq = Math.Max(first.DeviceBytes, before - model.DeviceMemory().Free);
                long kvBudget = budget - model.WeightBytes;
                int fit = (int)Math.Min(kvBudget / perSeq, 4096);
                if (fit < 1)
                {
                    Console.WriteLine($"{kv}: one sequence takes {perSeq / 1e9:F2} GB, more than the {kvBudget / 1e9:F2} GB left: FAIL");
                    failures++;
                    continue;
                }
                t.Restart();
                try
                {
                    if (pooled)
                    {
                        // fit - 1 copies in one pool (sequence 0 stays in its own cache as their source; it is not timed).
                        int n = Math.Max(1, fit - 1);
                        pool = kv == "f16"
                            ? model.CreateCache(new KvCacheConfig("f16", "f16"), n * (ctx + Slack))
                            : model.CreateKvQuantCache(_ => SevenB.Codecs(kv.TrimEnd('*')), 1, n * (ctx + Slack));
                        if (!kv.EndsWith('*') && kv != "f16") Console.WriteLine($"{kv}: the pool takes the model's layout (as {kv}*)");
                        for (int i = 0; i < n; i++)   // after sequence 0, which is seqs' only entry so far
                        {
                            var s = pool.CreateSequence(ctx + Slack);
                            s.CopyFrom(first);
                            seqs.Add(s);
                        }
                        seqs.RemoveAt(0);
                        seqs.Add(first);   // last: batch 1 times it (its own cache, as before)
                        fit = n;
                    }
                    else
                        while (seqs.Count < fit)
                        {
                            var s = Make();
                            seqs.Add(s);
                            s.CopyFrom(first);
                        }
                }
                catch (Cuda.CudaException e)
                {
                    Console.WriteLine($"{kv}: allocating sequence {seqs.Count + 1} of the {fit} computed to fit failed: {e.Message}: FAIL");
                    failures++;
                    continue;
                }
                Console.WriteLine($"{kv}: {perSeq / 1e9:F3} GB per sequence on the device ({first.DeviceBytes / 1e9:F3} GB of buffers; " +
                                  $"{perSeq / (double)(ctx + Slack):F0} B per token slot incl. partials and tables), {kvBudget / 1e9:F2} GB for KV -> " +
                                  $"{fit} sequences fit; all {fit} allocated, sequence 0 prefilled ({prefill:F0} tok/s), {fit - 1} device copies in " +
                                  $"{t.Elapsed.TotalSeconds:F1} s");
                long used = before - model.DeviceMemory().Free;   // all sequences, measured
                var (free, total) = MemoryInfo(model);
                long held = seqs.Sum(s => s.DeviceBytes);
                bool fits = model.WeightBytes + used <= budget;
                if (!fits) failures++;
                Console.WriteLine($"{kv}: weights {model.WeightBytes / 1e9:F2} GB + KV {used / 1e9:F2} GB on the device ({held / 1e9:F2} GB of buffers) = " +
                                  $"{(model.WeightBytes + used) / 1e9:F2} GB (budget {budgetGb:F0} GB: {(fits ? "ok" : "FAIL")}); device memory in use " +
                                  $"{(total - free) / 1e9:F2} of {total / 1e9:F2} GB (with activations, cuBLAS and the context)");
                // Batched decode: the batches to time, each from sequence 0 on.
                var batches = new SortedSet<int> { Math.Min(fit, maxBatch), fit };
                if (kv != "f16" && f16Batch > 0 && f16Batch < fit) batches.Add(f16Batch);
                batches.Add(1);
                foreach (int b in batches.Reverse())
                {
                    // From sequence 0 on (it takes at most three timings' tokens); batch 1 is the last sequence.
                    var batch = b == 1 ? [seqs[^1]] : seqs.Take(b).ToArray();
                    double tokS = Decode(model, batch, steps, out bool finite);
                    if (!finite) failures++;
                    double ms = b / tokS * 1e3;
                    string ratio = "";
                    if (kv == "f16" && b == Math.Min(fit, maxBatch)) { f16Batch = b; f16TokS = tokS; }
                    else if (kv != "f16" && f16TokS > 0) ratio = $", {tokS / f16TokS:F2}x f16's {f16TokS:F1} tok/s at its batch of {f16Batch}";
                    Console.WriteLine($"7B {kv} ctx {ctx} batch {b}: decode {tokS:F1} tok/s aggregate ({ms:F2} ms per step of {b} tokens){ratio}" +
                                      $"{(finite ? "" : "; NON-FINITE logits: FAIL")}");
                    Console.WriteLine($"{{\"kind\":\"serving-batch\",\"device\":\"{ctxInfo.Name}\",\"kv\":\"{kv}\",\"ctx\":{ctx},\"fit\":{fit},\"batch\":{b}," +
                                      $"\"decode_tok_s\":{tokS:F2},\"ms_per_step\":{ms:F3},\"gb_per_seq\":{perSeq / 1e9:F4},\"prefill_tok_s\":{prefill:F1}," +
                                      $"\"ratio_to_f16\":{(kv != "f16" && f16TokS > 0 ? tokS / f16TokS : 1):F3}}}");
                }
            }
            finally
            {
                foreach (var s in seqs) s.Dispose();
                pool?.Dispose();
                pool = null;
            }
        }
        return failures == 0 ? 0 : 1;
    }

    /// <summary>Decode slots beyond the context: sequence 0 takes three timings of 2 + steps tokens (one 128-token block).</summary>
    private const int Slack = 128;

    /// <summary>Two warm-up steps, then <paramref name="steps"/> timed steps of one token per sequence (its own greedy
    /// token), all sequences in one ForwardBatch; aggregate tok/s.</summary>
    private static double Decode(CudaTransformer model, CudaKvSequence[] seqs, int steps, out bool finite)
    {
        int b = seqs.Length, vocab = model.Config.VocabSize;
        var tokens = new int[b];
        var segs = new BatchSegment[b];
        var logits = new float[b * vocab];
        var rng = new Random(b);
        for (int i = 0; i < b; i++) tokens[i] = rng.Next(3, vocab);
        var t = new Stopwatch();
        for (int step = -2; step < steps; step++)
        {
            if (step == 0) t.Start();
            for (int i = 0; i < b; i++) segs[i] = new BatchSegment(seqs[i], i, 1, Decode: true, Logits: true);
            model.ForwardBatch(tokens, segs, logits);
            for (int i = 0; i < b; i++) tokens[i] = Argmax(logits.AsSpan(i * vocab, vocab));
        }
        t.Stop();
        finite = logits.All(float.IsFinite);
        return b * steps / t.Elapsed.TotalSeconds;
    }

    private static (long Free, long Total) MemoryInfo(CudaTransformer model) => model.DeviceMemory();
}
