using System.Diagnostics;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cuda.Model;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.ModelCheck;

/// <summary>
/// The whole forward pass (embedding, RMSNorm, RoPE, attention, SwiGLU, residuals, LM head) of a LLaMA-7B-shaped
/// model with random f16 weights made on the device: prefill and decode tok/s at several context lengths, f16 cache
/// vs KVQuant caches. No profile exists for random weights, so the KVQuant codecs get hand-made per-channel scales
/// (zero 0, range 1.75: the keys of these weights are ~N(0, 0.58)) and uniform codebooks: speed and memory only.
/// </summary>
internal static class SevenB
{
    public static readonly ModelConfig Config = new()
    {
        Architecture = "llama", Dim = 4096, Layers = 32, Heads = 32, KvHeads = 32, HeadDim = 128, FfnDim = 11008, VocabSize = 32000,
        NormEps = 1e-5f, RopeBase = 10000f, RopeDims = 128, RopeStyle = RopeStyle.Normal, ContextLength = 1 << 20,
    };

    public static int Run(int[] contexts, int decode, string[] formats, bool noCheck) => Run(contexts, decode, formats, noCheck, [NuqPrefill.Decoded]);

    /// <param name="prefillModes">Per KVQuant format, the prefill modes timed one after the other in this process (an
    /// A/B on the same warm model; f16 runs once per context).</param>
    public static int Run(int[] contexts, int decode, string[] formats, bool noCheck, NuqPrefill[] prefillModes)
    {
        var sw = Stopwatch.StartNew();
        using var model = CudaTransformer.CreateRandom(Config, new CudaModelOptions(CudaWeightType.F16, MaxBatch: 512));
        Console.WriteLine($"7B-shaped model, random f16 weights on {model.Device}: {model.WeightBytes / (double)(1L << 30):F2} GiB, made in {sw.ElapsedMilliseconds} ms");
        int failures = 0;
        // The contiguous decode layout behind the model (v6) against the model's own KVQuant layout: same codecs,
        // same random keys, values and queries through IKvSequence (prefill chunks, then decode steps).
        foreach (var kv in noCheck ? [] : new[] { "nuq4-1%", "nuq2-1%", "nuq2" })
        {
            using var lab = model.CreateKvQuantSequence(_ => Codecs(kv), 1, 700, contiguousNuq: true);
            using var own = model.CreateKvQuantSequence(_ => Codecs(kv), 1, 700, contiguousNuq: false);
            double rel = Compare(lab, own, new Random(7));
            bool ok = rel < 1e-3;
            if (!ok) failures++;
            Console.WriteLine($"check {kv}: contiguous decode layout (v9) vs the model's KVQuant layout, 7B shape: rel L2 {rel:E2} (tolerance 1E-003; RoPE angles " +
                              $"in double there, in float here): {(ok ? "ok" : "FAIL")}");
        }
        // Tensor-core prefill (f16 products) against the f32 tiles, every cache layout: same inputs, the flag flipped
        // between the two sequences' calls.
        foreach (var kv in noCheck ? [] : new[] { "f16", "nuq4-1%", "nuq4-1%*" })
        {
            CudaKvSequence Make() => kv == "f16" ? (CudaKvSequence)model.CreateSequence(new Cache.KvCacheConfig("f16", "f16"), 700)
                : model.CreateKvQuantSequence(_ => Codecs(kv.TrimEnd('*')), 1, 700, contiguousNuq: !kv.EndsWith('*'));
            using var tc = Make();
            using var f32 = Make();
            double rel = Compare(tc, f32, new Random(9), model);
            bool ok = rel < 1e-2;
            if (!ok) failures++;
            Console.WriteLine($"check {kv}: tensor-core prefill vs f32 tiles, 7B shape: rel L2 {rel:E2} (tolerance 1E-002, f16 products): {(ok ? "ok" : "FAIL")}");
        }
        model.TensorCorePrefill = true;
        // Issue 19's decode-once prefill against the tiles (tensor cores both): Decoded attends over the very f16 tiles
        // the tiles path makes (decoded once per chunk and layer instead of per 64 query rows), so it must agree to the
        // last bits; F16Chunk lets the chunk see itself unquantized, so it differs by the chunk's own quantization (shown,
        // with the f16 cache's distance to the tiles for scale: F16Chunk should lie between).
        foreach (var kv in noCheck ? [] : new[] { "nuq4-1%", "nuq2-1%", "nuq4-1%*" })
        {
            CudaKvSequence Make() => model.CreateKvQuantSequence(_ => Codecs(kv.TrimEnd('*')), 1, 700, contiguousNuq: !kv.EndsWith('*'));
            using (var tiles = Make())
            using (var once = Make())
            {
                double rel = Compare(tiles, once, new Random(11), before: (first, _) => model.NuqPrefill = first ? NuqPrefill.Tiles : NuqPrefill.Decoded);
                bool ok = rel < 1e-4;
                if (!ok) failures++;
                Console.WriteLine($"check {kv}: prefill decoded once per chunk vs tiles, 7B shape: rel L2 {rel:E2} (tolerance 1E-004, the same f16 tiles): {(ok ? "ok" : "FAIL")}");
            }
            using (var tiles = Make())
            using (var chunk = Make())
            using (var f16 = (CudaKvSequence)model.CreateSequence(new Cache.KvCacheConfig("f16", "f16"), 700))
            using (var tiles2 = Make())
            {
                double rel = Compare(tiles, chunk, new Random(11), before: (first, _) => model.NuqPrefill = first ? NuqPrefill.Tiles : NuqPrefill.F16Chunk);
                model.NuqPrefill = NuqPrefill.Tiles;
                double scale = Compare(tiles2, f16, new Random(11));
                Console.WriteLine($"info {kv}: prefill with the chunk in f16 vs tiles, 7B shape: rel L2 {rel:E2} (the f16 cache vs tiles: {scale:E2})");
            }
        }
        model.NuqPrefill = NuqPrefill.Tiles;
        foreach (int ctx in contexts)
            foreach (var kv in formats)   // nuq...*: the model's own KVQuant layout (model.cu), not the contiguous decode layout
                foreach (var mode in kv == "f16" ? [NuqPrefill.Tiles] : prefillModes)
                {
                    model.NuqPrefill = mode;
                    var seq = kv == "f16"
                        ? (CudaKvSequence)model.CreateSequence(new Cache.KvCacheConfig("f16", "f16"), ctx + decode)
                        : model.CreateKvQuantSequence(_ => Codecs(kv.TrimEnd('*')), 1, ctx + decode, contiguousNuq: !kv.EndsWith('*'));
                    double kvGib = seq.DeviceBytes / (double)(1L << 30);
                    var name = kv == "f16" ? kv : $"{kv}/{NuqPrefillSwitch.Name(mode)}";
                    var (pre, dec) = Timing.Run(model, seq, Bench.ThroughputBenchmark.PromptTokens(ctx, Config.VocabSize), decode);
                    Console.WriteLine($"7B {name} ctx {ctx}: prefill {pre:F0} tok/s ({ctx / pre:F1} s), decode {dec:F1} tok/s ({1e3 / dec:F2} ms/token), KV device {kvGib:F2} GiB");
                    Console.WriteLine($"{{\"kind\":\"7b\",\"kv\":\"{kv}\",\"prefill_mode\":\"{NuqPrefillSwitch.Name(mode)}\",\"ctx\":{ctx},\"prefill_tok_s\":{pre:F1},\"decode_tok_s\":{dec:F2},\"kv_gib\":{kvGib:F3}}}");
                }
        model.NuqPrefill = NuqPrefill.Tiles;
        return failures == 0 ? 0 : 1;
    }

    private static double Compare(CudaKvSequence a, CudaKvSequence b, Random rng, CudaTransformer? flip = null) =>
        Compare(a, b, rng, flip == null ? null : (first, _) => flip.TensorCorePrefill = first);

    /// <param name="before">Called before each sequence's calls (true: <paramref name="a"/>'s), to flip a model switch.</param>
    private static double Compare(CudaKvSequence a, CudaKvSequence b, Random rng, Action<bool, int>? before)
    {
        var c = Config;
        double worst = 0;
        foreach (int n in new[] { 64, 37, 1, 200, 1, 1 })
        {
            var k = Rand(rng, n * c.KvDim);
            var v = Rand(rng, n * c.KvDim);
            var q = Rand(rng, n * c.QDim);
            for (int l = 0; l < 2; l++)
            {
                var oa = new float[n * c.QDim];
                var ob = new float[n * c.QDim];
                before?.Invoke(true, l);
                a.Append(l, k, v, n);
                a.Attend(l, q, n, oa, Parallelism.Default);
                before?.Invoke(false, l);
                b.Append(l, k, v, n);
                b.Attend(l, q, n, ob, Parallelism.Default);
                double num = 0, den = 0;
                for (int i = 0; i < oa.Length; i++) { double d = oa[i] - ob[i]; num += d * d; den += (double)ob[i] * ob[i]; }
                worst = Math.Max(worst, Math.Sqrt(num / den));
            }
            for (int l = 2; l < c.Layers; l++) { a.Append(l, k, v, n); b.Append(l, k, v, n); }
            a.Commit(n);
            b.Commit(n);
        }
        return worst;
    }

    private static float[] Rand(Random rng, int n)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)((rng.NextDouble() + rng.NextDouble() + rng.NextDouble() - 1.5) * 1.2 * (rng.NextDouble() < 0.01 ? 4 : 1));
        return x;
    }

    internal static (NuqChannelCodec[] Keys, NuqTokenCodec[] Values) Codecs(string spec) => Codecs(spec, Config.KvHeads, Config.HeadDim);

    /// <summary>Hand-made KVQuant codecs (zero 0, range 1.75 per channel, uniform codebooks) for any shape.</summary>
    internal static (NuqChannelCodec[] Keys, NuqTokenCodec[] Values) Codecs(string spec, int kvHeads, int headDim)
    {
        var s = KvQuantSpec.TryParse(spec) ?? throw new ArgumentException(spec);
        var zero = new float[headDim];
        var range = Enumerable.Repeat(1.75f, headDim).ToArray();
        var keys = new NuqChannelCodec[kvHeads];
        var values = new NuqTokenCodec[kvHeads];
        for (int h = 0; h < keys.Length; h++)
        {
            keys[h] = new NuqChannelCodec(s, KvSide.Key, 32, headDim, zero, range, NuqCodebook.Uniform(s.Bits));
            values[h] = new NuqTokenCodec(s, KvSide.Value, 32, headDim, NuqCodebook.Uniform(s.Bits));
        }
        return (keys, values);
    }
}
