using System.Diagnostics;
using System.Globalization;
using Kvq.Cache;
using Kvq.Cuda.Model;
using Kvq.Model;
using Kvq.ModelCheck;
using Kvq.Tensors;

// CPU vs GPU on a real model, in one process on a GPU machine (NativeAOT: the machine has no .NET):
//  1. logits of every position of a text window, CPU Transformer vs CudaTransformer (f32 and f16 weights);
//  2. greedy continuations of a prompt, token for token;
//  3. the CPU Transformer over the device cache (CudaKvSequence behind IKvSequence) vs over the CPU cache;
//  4. GPU prefill and decode tok/s at several context lengths (and the CPU's, same machine, for scale).
// Exit code 1 when a check fails. Usage: ModelCheck --model M.gguf --text T.txt [--window 300] [--gen 64]
//   [--contexts 512,2048,4000] [--decode 64] [--cpu-threads N]
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
string Arg(string name, string def) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : def; }
var modelPath = Arg("--model", "models/books-19m.gguf");
var textPath = Arg("--text", "text/moby.txt");
int window = int.Parse(Arg("--window", "300"));
int gen = int.Parse(Arg("--gen", "64"));
int decode = int.Parse(Arg("--decode", "64"));
var contexts = Arg("--contexts", "512,2048,4000").Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
int threads = int.Parse(Arg("--cpu-threads", Math.Min(Environment.ProcessorCount, 16).ToString()));
var profilePath = Arg("--profile", "");
var nuqSpecs = Arg("--nuq", "nuq4-1%,nuq3-1%,nuq2-1%,nuq3-1%:mixed").Split(',', StringSplitOptions.RemoveEmptyEntries);
int sink = int.Parse(Arg("--sink", "1"));
int failures = 0;
var sevenB = Arg("--sevenb", "");
if (sevenB.Length > 0)
    return SevenB.Run(sevenB.Split(',').Select(int.Parse).ToArray(), int.Parse(Arg("--decode", "32")),
        Arg("--sevenb-kv", "f16,nuq4-1%,nuq2-1%,nuq2,nuq4-1%*").Split(','), args.Contains("--no-check"),
        [.. Arg("--nuq-prefill", "decoded").Split(',').Select(m => NuqPrefillSwitch.Parse(m, "--nuq-prefill"))]);

// Issue 20: the host tier behind the device cache (OffloadRun.cs; dev/gpu/offload-2m.sh).
if (args.Contains("--offload"))
    return OffloadRun.Run(int.Parse(Arg("--offload-check", "131072")), int.Parse(Arg("--offload-ctx", "2000000")), Arg("--offload-budget", "2%"),
        int.Parse(Arg("--offload-warmup", "3")), int.Parse(Arg("--offload-steps", "16")), Arg("--offload-kv", "nuq2"));

if (args.Contains("--batch"))
    return BatchCheck.RunAll(modelPath, profilePath, sink);
var servingBatch = Arg("--sevenb-batch", "");
if (servingBatch.Length > 0)
    return ServingBatch.Run(int.Parse(servingBatch), int.Parse(Arg("--batch-steps", "32")), Arg("--batch-kv", "f16,nuq4-1%").Split(','),
        double.Parse(Arg("--batch-budget-gb", "70")), int.Parse(Arg("--batch-max", "32")), args.Contains("--batch-pool"));

using var loaded = ModelLoader.Load(modelPath);
var cfg = loaded.Weights.Config;
var cpu = new Transformer(loaded.Weights, new Parallelism(threads));
var text = File.ReadAllText(textPath).Replace("\r\n", "\n").TrimStart('\uFEFF');
var tokens = loaded.Tokenizer.Encode(text, true);
Console.WriteLine($"model {modelPath}: {cfg.Layers} layers, {cfg.Heads}/{cfg.KvHeads} heads x {cfg.HeadDim}, vocab {cfg.VocabSize}; text {tokens.Length} tokens; cpu {threads} threads");
var win = tokens.AsSpan(0, Math.Min(window, tokens.Length)).ToArray();
var kv16 = new KvCacheConfig("f16", "f16");
float[] cpuLogits = new float[win.Length * cfg.VocabSize];
using (var seq = new PagedKvCache(cpu.KvShape, kv16).CreateSequence()) cpu.Forward(win, seq, default, cpuLogits);

foreach (var wt in new[] { CudaWeightType.F32, CudaWeightType.F16 })
{
    var sw = Stopwatch.StartNew();
    using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(wt));
    Console.WriteLine($"\n== {gpu.Device}: loaded in {sw.ElapsedMilliseconds} ms, weights {gpu.WeightBytes / 1048576.0:F1} MiB");
    // 1. Logits over the window (prefill in chunks of MaxBatch).
    var gpuLogits = new float[cpuLogits.Length];
    using (var seq = (CudaKvSequence)gpu.CreateSequence(kv16, win.Length)) gpu.Forward(win, seq, default, gpuLogits);
    var (maxAbs, relL2, agree) = Compare(cpuLogits, gpuLogits, cfg.VocabSize);
    double tol = wt == CudaWeightType.F32 ? 1e-4 : 2e-2;
    bool ok = relL2 <= tol;
    if (!ok) failures++;
    Console.WriteLine($"check logits {win.Length} positions, {wt}: rel L2 {relL2:E2} (tolerance {tol:E0}), max |diff| {maxAbs:E2}, argmax agrees {agree:P1}: {(ok ? "ok" : "FAIL")}");
    // 2. Greedy continuation.
    int[] prompt = win.AsSpan(0, Math.Min(64, win.Length)).ToArray();
    var a = Greedy(cpu, new PagedKvCache(cpu.KvShape, kv16).CreateSequence(), prompt, gen, cfg.VocabSize);
    var b = Greedy(gpu, gpu.CreateSequence(kv16, prompt.Length + gen), prompt, gen, cfg.VocabSize);
    int same = 0;
    while (same < gen && a[same] == b[same]) same++;
    bool textOk = same == gen || wt == CudaWeightType.F16;   // f16 products may part at a near-tie; reported
    if (!textOk) failures++;
    Console.WriteLine($"check greedy {gen} tokens, {wt}: {(same == gen ? "SAME" : $"DIFFERENT from token {same}")}: {(textOk ? "ok" : "FAIL")}");
    Console.WriteLine($"  cpu: {Escape(Decode(loaded.Tokenizer, a))}");
    if (same != gen) Console.WriteLine($"  gpu: {Escape(Decode(loaded.Tokenizer, b))}");
    // 3. The CPU model over the device cache (host spans through IKvSequence).
    if (wt == CudaWeightType.F32)
    {
        var viaDevice = new float[cpuLogits.Length];
        using (var seq = (CudaKvSequence)gpu.CreateSequence(kv16, win.Length)) cpu.Forward(win, seq, default, viaDevice);
        var (m3, r3, a3) = Compare(cpuLogits, viaDevice, cfg.VocabSize);
        bool ok3 = r3 <= 1e-4;
        if (!ok3) failures++;
        Console.WriteLine($"check CPU model over the device cache vs the CPU cache: rel L2 {r3:E2}, max |diff| {m3:E2}, argmax {a3:P1}: {(ok3 ? "ok" : "FAIL")}");
    }
    // 3b. Paging: two sequences in one pool, chunks interleaved (their blocks alternate in the pool), against each run
    // alone; then one disposed and a third reusing its blocks. The same arithmetic, so the logits must be identical.
    if (wt == CudaWeightType.F32)
    {
        foreach (var pcfg in new List<KvCacheConfig> { kv16 }.Concat(profilePath.Length > 0
                     ? [new KvCacheConfig("nuq3-1%", "nuq3-1%", 32, sink, Kvq.Cache.Codecs.KvQuant.KvQuantProfileFile.Read(profilePath))] : []))
        {
            int half = win.Length / 2;
            int[] w1 = win[..half], w2 = win[half..];
            float[] Alone(int[] w)
            {
                var o = new float[w.Length * cfg.VocabSize];
                using var s1 = (CudaKvSequence)gpu.CreateSequence(pcfg, w.Length);
                for (int at = 0; at < w.Length; at += 40)   // the same chunks as below: the same kernels and split plans
                {
                    int m = Math.Min(40, w.Length - at);
                    gpu.Forward(w.AsSpan(at, m), s1, default, o.AsSpan(at * cfg.VocabSize, m * cfg.VocabSize));
                }
                return o;
            }
            var a1 = Alone(w1);
            var a2 = Alone(w2);
            using var pool = gpu.CreateCache(pcfg, w1.Length + w2.Length + 256);
            var g1 = new float[a1.Length];
            var g2 = new float[a2.Length];
            bool identical;
            using (var s1 = pool.CreateSequence(w1.Length))
            using (var s2 = pool.CreateSequence(w2.Length))
            {
                for (int at = 0; at < Math.Max(w1.Length, w2.Length); at += 40)   // 40-token chunks: blocks fill unevenly
                {
                    if (at < w1.Length) { int m = Math.Min(40, w1.Length - at); gpu.Forward(w1.AsSpan(at, m), s1, default, g1.AsSpan(at * cfg.VocabSize, m * cfg.VocabSize)); }
                    if (at < w2.Length) { int m = Math.Min(40, w2.Length - at); gpu.Forward(w2.AsSpan(at, m), s2, default, g2.AsSpan(at * cfg.VocabSize, m * cfg.VocabSize)); }
                }
                identical = a1.AsSpan().SequenceEqual(g1) && a2.AsSpan().SequenceEqual(g2);
            }
            int freeAfter = pool.FreeBlocks;
            var g3 = new float[a2.Length];
            using (var s3 = pool.CreateSequence(w2.Length))
                for (int at = 0; at < w2.Length; at += 40)
                {
                    int m = Math.Min(40, w2.Length - at);
                    gpu.Forward(w2.AsSpan(at, m), s3, default, g3.AsSpan(at * cfg.VocabSize, m * cfg.VocabSize));
                }
            bool reuse = a2.AsSpan().SequenceEqual(g3) && freeAfter == pool.Blocks;
            if (!identical || !reuse) failures++;
            Console.WriteLine($"check paging, {pcfg.Name}: two sequences interleaved in one pool of {pool.Blocks} blocks give the logits of each alone: " +
                              $"{(identical ? "identical" : "DIFFERENT")}; blocks back after dispose {freeAfter}/{pool.Blocks}, reused: {(reuse ? "identical" : "DIFFERENT")}: " +
                              $"{(identical && reuse ? "ok" : "FAIL")}");
        }
    }
    // 4. Speed.
    foreach (int ctx in contexts)
    {
        var (pre, dec) = Timing.Run(gpu, gpu.CreateSequence(kv16, ctx + decode), Kvq.Bench.ThroughputBenchmark.PromptTokens(ctx, cfg.VocabSize), decode);
        Console.WriteLine($"speed {wt} ctx {ctx}: prefill {pre:F0} tok/s, decode {dec:F1} tok/s ({1e3 / dec:F2} ms/token)");
        Console.WriteLine($"{{\"kind\":\"speed\",\"device\":\"{gpu.DeviceInfo.Name}\",\"weights\":\"{wt}\",\"ctx\":{ctx},\"prefill_tok_s\":{pre:F1},\"decode_tok_s\":{dec:F2}}}");
    }
}
// 5. KVQuant caches on the device (encoded there) vs the CPU's, same model (f32 weights), same profile.
if (profilePath.Length > 0)
{
    var profile = Kvq.Cache.Codecs.KvQuant.KvQuantProfileFile.Read(profilePath);
    using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(CudaWeightType.F32));
    Console.WriteLine($"\n== KVQuant on {gpu.Device}, profile {profilePath}, sink {sink}");
    foreach (var spec in nuqSpecs)
    {
        var cfgN = new KvCacheConfig(spec, spec, 32, sink, profile);
        var cpuN = new float[cpuLogits.Length];
        using (var seq = new PagedKvCache(cpu.KvShape, cfgN).CreateSequence()) cpu.Forward(win, seq, default, cpuN);
        var gpuN = new float[cpuLogits.Length];
        using (var seq = (CudaKvSequence)gpu.CreateSequence(cfgN, win.Length))
        {
            gpu.Forward(win, seq, default, gpuN);
            var mem = seq.Memory();
            Console.WriteLine($"  {spec}: device cache {seq.DeviceBytes / 1048576.0:F2} MiB for {seq.Capacity} slots, {mem.BitsPerElement:F2} bits/element held");
        }
        // The cache alone, same inputs on both sides: codes must agree, so attention outputs agree to f32 rounding.
        double rc = CacheCheck(cpu.KvShape, cfgN, gpu, 300, 11);
        bool okC = rc <= 1e-4;
        if (!okC) failures++;
        Console.WriteLine($"check {spec} cache alone (random K/V/Q, 300 tokens in chunks then decode steps, every layer): GPU vs CPU attention rel L2 {rc:E2}: {(okC ? "ok" : "FAIL")}");
        // The whole model: quantization is discontinuous, so f32-rounding differences flip a few codes in layer 0 and the
        // flips cascade through the layers; compare what matters, the window's perplexity.
        var (mN, rN, aN) = Compare(cpuN, gpuN, cfg.VocabSize);
        var (_, rQ, _) = Compare(cpuLogits, cpuN, cfg.VocabSize);
        double pF = Ppl(cpuLogits, win, cfg.VocabSize), pC = Ppl(cpuN, win, cfg.VocabSize), pG = Ppl(gpuN, win, cfg.VocabSize);
        // Both are one realisation of the same quantisation noise: the GPU may not be further from the CPU than the
        // codec itself moves the perplexity from f16 (plus 0.5%).
        bool okN = Math.Abs(Math.Log(pG / pC)) <= Math.Abs(Math.Log(pC / pF)) + 0.005;
        if (!okN) failures++;
        Console.WriteLine($"check {spec} model, {win.Length} positions: ppl f16 {pF:F4}, CPU {spec} {pC:F4}, GPU {spec} {pG:F4}; logits GPU vs CPU rel L2 {rN:E2} " +
                          $"(codec vs f16 {rQ:E2}), max |diff| {mN:E2}, argmax {aN:P1}: {(okN ? "ok" : "FAIL")}");
        int[] promptN = win.AsSpan(0, Math.Min(64, win.Length)).ToArray();
        var ca = Greedy(cpu, new PagedKvCache(cpu.KvShape, cfgN).CreateSequence(), promptN, gen, cfg.VocabSize);
        var cb = Greedy(gpu, gpu.CreateSequence(cfgN, promptN.Length + gen), promptN, gen, cfg.VocabSize);
        int sameN = 0;
        while (sameN < gen && ca[sameN] == cb[sameN]) sameN++;
        Console.WriteLine($"check {spec} greedy {gen} tokens: {(sameN == gen ? "SAME" : $"DIFFERENT from token {sameN}")}");
        foreach (int ctx in contexts)
        {
            var (pre, dec) = Timing.Run(gpu, gpu.CreateSequence(cfgN, ctx + decode), Kvq.Bench.ThroughputBenchmark.PromptTokens(ctx, cfg.VocabSize), decode);
            Console.WriteLine($"speed {spec} ctx {ctx}: prefill {pre:F0} tok/s, decode {dec:F1} tok/s ({1e3 / dec:F2} ms/token)");
            Console.WriteLine($"{{\"kind\":\"speed\",\"device\":\"{gpu.DeviceInfo.Name}\",\"weights\":\"F32\",\"kv\":\"{spec}\",\"ctx\":{ctx},\"prefill_tok_s\":{pre:F1},\"decode_tok_s\":{dec:F2}}}");
        }
    }
}

// CPU speed on this machine, for scale (not the project's reference machine).
foreach (int ctx in contexts.Take(1))
{
    var r = Kvq.Bench.ThroughputBenchmark.Run(cpu, "books", ctx, kv16, decode);
    Console.WriteLine($"speed cpu ({threads} threads) ctx {ctx}: prefill {r.PrefillTokS:F0} tok/s, decode {r.DecodeTokS:F1} tok/s");
}
Console.WriteLine(failures == 0 ? "\nall checks passed" : $"\n{failures} check(s) FAILED");
return failures == 0 ? 0 : 1;

static (double MaxAbs, double RelL2, double ArgmaxAgree) Compare(float[] a, float[] b, int vocab)
{
    double max = 0;
    int agree = 0, rows = a.Length / vocab;
    for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs((double)a[i] - b[i]));
    for (int r = 0; r < rows; r++)
        if (Kvq.Bench.ThroughputBenchmark.Argmax(a.AsSpan(r * vocab, vocab)) == Kvq.Bench.ThroughputBenchmark.Argmax(b.AsSpan(r * vocab, vocab))) agree++;
    return (max, RelL2(a, b), (double)agree / rows);
}

// ||b - a|| / ||a||, a the reference.
static double RelL2(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
{
    double num = 0, den = 0;
    for (int i = 0; i < a.Length; i++)
    {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)a[i] * a[i];
    }
    return Math.Sqrt(num / Math.Max(den, 1e-300));
}

static int[] Greedy(ILanguageModel m, IKvSequence seq, int[] prompt, int n, int vocab)
{
    var logits = new float[vocab];
    var outp = new int[n];
    m.Forward(prompt, seq, logits);
    var one = new int[1];
    for (int i = 0; i < n; i++)
    {
        outp[i] = Kvq.Bench.ThroughputBenchmark.Argmax(logits);
        one[0] = outp[i];
        if (i + 1 < n) m.Forward(one, seq, logits);
    }
    (seq as IDisposable)?.Dispose();
    return outp;
}

// Perplexity of the window's next tokens from all-position logits.
static double Ppl(float[] logits, int[] ids, int vocab)
{
    double nll = 0;
    for (int t = 0; t + 1 < ids.Length; t++)
    {
        var row = logits.AsSpan(t * vocab, vocab);
        float mx = float.NegativeInfinity;
        foreach (var v in row) mx = Math.Max(mx, v);
        double sum = 0;
        foreach (var v in row) sum += Math.Exp(v - mx);
        nll += mx + Math.Log(sum) - row[ids[t + 1]];
    }
    return Math.Exp(nll / (ids.Length - 1));
}

// A CPU cache and a device cache fed the same random keys (around the profile's per-channel range, some outliers),
// values and queries through IKvSequence: prefill chunks, then decode steps; worst rel L2 of the attention outputs.
static double CacheCheck(KvShape shape, KvCacheConfig config, CudaTransformer gpu, int tokens, int seed)
{
    var rng = new Random(seed);
    using var a = new PagedKvCache(shape, config).CreateSequence();
    using var b = (CudaKvSequence)gpu.CreateSequence(config, tokens + 8);
    double worst = 0;
    int done = 0;
    foreach (int n in new[] { 64, 64, 37, 64, 1, 7, 63, 1, 1, 1, 1 })
    {
        if (done + n > tokens + 8) break;
        var k = Rand(rng, n * shape.KvDim, 3f);
        var v = Rand(rng, n * shape.KvDim, 2f);
        var q = Rand(rng, n * shape.QDim, 1f);
        var ids = new int[n];
        for (int i = 0; i < n; i++) ids[i] = 3 + rng.Next(100);
        a.BeginChunk(ids);
        b.BeginChunk(ids);
        for (int l = 0; l < shape.Layers; l++)
        {
            a.Append(l, k, v, n);
            b.Append(l, k, v, n);
            var oa = new float[n * shape.QDim];
            var ob = new float[n * shape.QDim];
            a.Attend(l, q, n, oa, Parallelism.Default);
            b.Attend(l, q, n, ob, Parallelism.Default);
            worst = Math.Max(worst, RelL2(oa, ob));
        }
        a.Commit(n);
        b.Commit(n);
        done += n;
    }
    return worst;
}

static float[] Rand(Random rng, int n, float scale)
{
    var x = new float[n];
    for (int i = 0; i < n; i++)
    {
        double g = rng.NextDouble() + rng.NextDouble() + rng.NextDouble() - 1.5;
        x[i] = (float)(scale * g * (rng.NextDouble() < 0.01 ? 6 : 1) + 0.3 * Math.Sin(i));
    }
    return x;
}

static string Decode(Kvq.Tokenizers.ITokenizer t, int[] ids)
{
    var bytes = new List<byte>();
    foreach (var id in ids) bytes.AddRange(t.TokenBytes(id).ToArray());
    return System.Text.Encoding.UTF8.GetString(bytes.ToArray());
}

static string Escape(string s) => s.Replace("\n", "\\n");
