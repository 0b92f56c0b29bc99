using System.Diagnostics;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cuda.Model;
using Kvq.Model;

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

    public static int Run(int[] contexts, int decode)
    {
        var sw = Stopwatch.StartNew();
        using var model = CudaTransformer.CreateRandom(Config, new CudaModelOptions(CudaWeightType.F16, MaxBatch: 512));
        Console.WriteLine($"7B-shaped model, random f16 weights on {model.Device}: {model.WeightBytes / (double)(1L << 30):F2} GiB, made in {sw.ElapsedMilliseconds} ms");
        foreach (int ctx in contexts)
            foreach (var kv in new[] { "f16", "nuq4-1%", "nuq2-1%" })
            {
                var ids = Kvq.Bench.ThroughputBenchmark.PromptTokens(ctx, Config.VocabSize);
                var logits = new float[Config.VocabSize];
                using var seq = kv == "f16"
                    ? (CudaKvSequence)model.CreateSequence(new Kvq.Cache.KvCacheConfig("f16", "f16"), ctx + decode)
                    : model.CreateKvQuantSequence(_ => Codecs(kv), 1, ctx + decode);
                var t = Stopwatch.StartNew();
                model.Forward(ids, seq, logits);
                double pre = t.Elapsed.TotalSeconds;
                var one = new int[1];
                t.Restart();
                for (int i = 0; i < decode; i++)
                {
                    one[0] = Kvq.Bench.ThroughputBenchmark.Argmax(logits);
                    model.Forward(one, seq, logits);
                }
                double dec = t.Elapsed.TotalSeconds;
                bool finite = logits.All(float.IsFinite);
                Console.WriteLine($"7B {kv} ctx {ctx}: prefill {ctx / pre:F0} tok/s ({pre:F1} s), decode {decode / dec:F1} tok/s ({dec / decode * 1e3:F2} ms/token), " +
                                  $"KV device {seq.DeviceBytes / (double)(1L << 30):F2} GiB, logits finite {finite}");
                Console.WriteLine($"{{\"kind\":\"7b\",\"kv\":\"{kv}\",\"ctx\":{ctx},\"prefill_tok_s\":{ctx / pre:F1},\"decode_tok_s\":{decode / dec:F2},\"kv_gib\":{seq.DeviceBytes / (double)(1L << 30):F3}}}");
            }
        return 0;
    }

    private static (NuqChannelCodec[] Keys, NuqTokenCodec[] Values) Codecs(string spec)
    {
        var s = KvQuantSpec.TryParse(spec) ?? throw new ArgumentException(spec);
        var zero = new float[Config.HeadDim];
        var range = Enumerable.Repeat(1.75f, Config.HeadDim).ToArray();
        var keys = new NuqChannelCodec[Config.KvHeads];
        var values = new NuqTokenCodec[Config.KvHeads];
        for (int h = 0; h < keys.Length; h++)
        {
            keys[h] = new NuqChannelCodec(s, KvSide.Key, 32, Config.HeadDim, zero, range, NuqCodebook.Uniform(s.Bits));
            values[h] = new NuqTokenCodec(s, KvSide.Value, 32, Config.HeadDim, NuqCodebook.Uniform(s.Bits));
        }
        return (keys, values);
    }
}
