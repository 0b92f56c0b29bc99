using Kvq.Cache;
using Kvq.Cache.Codecs;
using Kvq.Cache.Codecs.KvQuant;
using Kvq.Cuda.Distributed;
using Kvq.Cuda.Model;
using Kvq.Model;
using Kvq.Tensors;
using Xunit.Abstractions;

namespace Kvq.Cuda.Tests;

/// <summary>Sequence parallelism on one GPU (checking mode, docs/multigpu.md): N = 2, 4, 8 shards attended by the
/// model's own kernels over their block ranges and merged by shard_merge. A shard stores the unsharded cache's bytes for
/// its positions (f16 and KVQuant are encoded token by token). Where the shard boundaries fall on the unsharded split
/// plan's boundaries (multiples of 256 tokens at these sizes on an H100 or H200: <see cref="ShardSplitPlan"/>), the
/// shards run the unsharded splits and shard_merge is attn_merge's arithmetic, so attention and the whole model's
/// logits equal the unsharded ones within 1e-5 (expected: bit for bit, printed); elsewhere the splits are placed
/// differently and the model amplifies that f32 reassociation (run 30: up to 5.5e-4 of the largest logit), checked at
/// <see cref="UnalignedLogitTolerance"/>. NCCL with world size 1 runs the real path (all-gather of the partials).</summary>
public class ShardedAttentionGpuTests(ITestOutputHelper output)
{
    private const double Tolerance = 1e-5, UnalignedLogitTolerance = 1e-3;

    private static string BooksGguf()
    {
        var env = Environment.GetEnvironmentVariable("KVQ_SHARED");
        if (!string.IsNullOrEmpty(env)) return Path.Combine(env, "models", "books-19m.gguf");
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            var p = Path.Combine(dir.FullName, "shared", "models", "books-19m.gguf");
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException("books-19m.gguf: set KVQ_SHARED to the fixtures folder");
    }

    /// <summary>max |got - want| / max |want|.</summary>
    private static double RelDiff(ReadOnlySpan<float> want, ReadOnlySpan<float> got)
    {
        double diff = 0, max = 0;
        for (int i = 0; i < want.Length; i++)
        {
            if (!float.IsFinite(got[i])) return double.PositiveInfinity;
            diff = Math.Max(diff, Math.Abs(want[i] - got[i]));
            max = Math.Max(max, Math.Abs(want[i]));
        }
        Assert.True(max > 0, "the reference output is all zeros");
        return diff / max;
    }

    internal static (NuqChannelCodec[] Keys, NuqTokenCodec[] Values) Codecs(string spec, int kvHeads, int headDim)
    {
        var s = KvQuantSpec.TryParse(spec)!;
        var rng = new Random(3);
        var keys = new NuqChannelCodec[kvHeads];
        var values = new NuqTokenCodec[kvHeads];
        for (int h = 0; h < kvHeads; h++)
        {
            var zero = Enumerable.Range(0, headDim).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
            var range = Enumerable.Range(0, headDim).Select(_ => 0.5f + (float)rng.NextDouble()).ToArray();
            keys[h] = new NuqChannelCodec(s, KvSide.Key, 32, headDim, zero, range, NuqCodebook.Uniform(s.Bits));
            values[h] = new NuqTokenCodec(s, KvSide.Value, 32, headDim, NuqCodebook.Uniform(s.Bits));
        }
        return (keys, values);
    }

    private static ShardLayout[] Layouts(int tokens) =>
    [
        ShardLayout.Even(tokens, 2),
        ShardLayout.Even(tokens, 4),
        ShardLayout.Even(tokens, 8),
        // Unequal shards: a short first one (the sinks), a long one, single blocks.
        new ShardLayout([128, 640, 128, 384, 256, 128]),
        // On 256-token boundaries: the unsharded splits (bit for bit).
        ShardLayout.Even(tokens, 4, align: 256),
        new ShardLayout([768, 256, 512]),
    ];

    /// <summary>Every shard boundary on a multiple of 256 tokens: at these sizes the unsharded split plans of an H100 or
    /// H200 (132 SMs) cut at 128 or 256 tokens, so every call of such a layout is aligned.</summary>
    private static bool OnChunks(ShardLayout layout) => layout.First.All(f => f % 256 == 0);

    [GpuFact]
    public void ShardedAttentionEqualsUnshardedOnRandomKeysAndValues()
    {
        // GQA (8 query heads on 2 KV heads) at head dim 64 and 128; f16 and KVQuant (nuq4-1% with 3 sink tokens, nuq3);
        // prompt chunks of 37 rows that cross shard boundaries, then decode steps. Every case runs and prints first.
        var failures = new List<string>();
        foreach (int hd in new[] { 64, 128 })
        {
            var cfg = new ModelConfig
            {
                Architecture = "llama", Dim = 8 * hd, Layers = 2, Heads = 8, KvHeads = 2, HeadDim = hd, FfnDim = 64, VocabSize = 32,
                NormEps = 1e-5f, RopeBase = 10000f, RopeDims = hd, RopeStyle = RopeStyle.Normal, ContextLength = 4096,
            };
            using var model = CudaTransformer.CreateRandom(cfg, new CudaModelOptions(CudaWeightType.F32, MaxBatch: 48, ContiguousNuq: false));
            var shape = model.KvShape;
            foreach (var (spec, sink) in new[] { ("f16", 0), ("nuq4-1%", 3), ("nuq3", 0) })
                foreach (var layout in Layouts(1400))
                {
                    int tokens = (int)Math.Min(layout.Total, 1400) - 4;
                    using var whole = spec == "f16"
                        ? (CudaKvSequence)model.CreateSequence(new KvCacheConfig("f16", "f16"), (int)layout.Total)
                        : model.CreateKvQuantSequence(_ => Codecs(spec, shape.KvHeads, hd), sink, (int)layout.Total, contiguousNuq: false);
                    using var sharded = spec == "f16"
                        ? model.CreateShardedSequence(new KvCacheConfig("f16", "f16"), layout)
                        : model.CreateShardedKvQuantSequence(_ => Codecs(spec, shape.KvHeads, hd), sink, layout);
                    var rng = new Random(hd * 31 + layout.Shards + spec.Length);
                    double worst = 0;
                    int calls = 0, bitwise = 0;
                    for (int done = 0; done < tokens;)
                    {
                        int n = done < tokens - 8 ? Math.Min(37, tokens - 8 - done) : 1;
                        var k = Random(rng, n * shape.KvDim);
                        var v = Random(rng, n * shape.KvDim);
                        var q = Random(rng, n * shape.QDim);
                        var a = new float[q.Length];
                        var b = new float[q.Length];
                        for (int l = 0; l < shape.Layers; l++)
                        {
                            whole.Append(l, k, v, n);
                            sharded.Append(l, k, v, n);
                            whole.Attend(l, q, n, a, default!);
                            sharded.Attend(l, q, n, b, default!);
                            double rel = RelDiff(a, b);
                            worst = Math.Max(worst, rel);
                            calls++;
                            if (a.AsSpan().SequenceEqual(b)) bitwise++;
                            if (rel > Tolerance) failures.Add($"hd {hd} {spec} {layout}: tokens {done}..{done + n} layer {l}: rel diff {rel:E2}");
                        }
                        whole.Commit(n);
                        sharded.Commit(n);
                        done += n;
                    }
                    var (aligned, unaligned) = sharded.PlanCounts;
                    output.WriteLine($"hd {hd} {spec} sink {sink} {layout}: {tokens} tokens, worst rel diff {worst:E2}; " +
                                     $"{bitwise} of {calls} calls bit for bit; plans aligned {aligned}, unaligned {unaligned}");
                    if (OnChunks(layout) && unaligned != 0) failures.Add($"hd {hd} {spec} {layout}: {unaligned} calls not on the unsharded splits");
                }
        }
        Assert.True(failures.Count == 0, string.Join("; ", failures.Take(20)));
    }

    private static float[] Random(Random rng, int n)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        return a;
    }

    [GpuFact]
    public void ShardedModelLogitsEqualUnshardedOnBooks19m()
    {
        using var loaded = ModelLoader.Load(BooksGguf());
        var cfg = loaded.Weights.Config;
        using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(CudaWeightType.F32, MaxBatch: 48, ContiguousNuq: false));
        var rng = new Random(21);
        var ids = new int[1001];   // odd: prompt chunks of 48 cross every shard boundary, then decode steps
        ids[0] = 1;
        for (int i = 1; i < ids.Length; i++) ids[i] = rng.Next(3, cfg.VocabSize);
        int prompt = 990;
        var shape = gpu.KvShape;
        var failures = new List<string>();
        foreach (var (spec, sink) in new[] { ("f16", 0), ("nuq4-1%", 2) })
        {
            (int Aligned, int Unaligned) plans = default;
            float[] Run(Func<IKvSequence> make)
            {
                var logits = new float[ids.Length * cfg.VocabSize];
                using var seq = (IDisposable)make();
                var s = (IKvSequence)seq;
                gpu.Forward(ids.AsSpan(0, prompt), s, default, logits.AsSpan(0, prompt * cfg.VocabSize));
                for (int t = prompt; t < ids.Length; t++)
                    gpu.Forward(ids.AsSpan(t, 1), s, default, logits.AsSpan(t * cfg.VocabSize, cfg.VocabSize));
                if (s is ShardedKvSequence sharded) plans = sharded.PlanCounts;
                return logits;
            }
            var want = Run(() => spec == "f16"
                ? gpu.CreateSequence(new KvCacheConfig("f16", "f16"), 1024)
                : gpu.CreateKvQuantSequence(_ => Codecs(spec, shape.KvHeads, shape.HeadDim), sink, 1024, contiguousNuq: false));
            // On 256-token boundaries (the unsharded splits: 1e-5, expected bit for bit): 2 and 4 even shards, 8 shards of
            // which 4 hold nothing yet, 4 unequal shards. Then the layouts of run 30 that cut unsharded splits (128-token
            // shards, [128, 512, 256, 128]): f32 reassociation through 8 layers, at the looser bound.
            var layouts = new[]
            {
                ShardLayout.Even(1024, 2), ShardLayout.Even(1024, 4), ShardLayout.Even(2048, 8, align: 256), new ShardLayout([256, 512, 256, 256]),
                ShardLayout.Even(1024, 8), new ShardLayout([128, 512, 256, 128]),
            };
            foreach (var layout in layouts)
            {
                var got = Run(() => spec == "f16"
                    ? gpu.CreateShardedSequence(new KvCacheConfig("f16", "f16"), layout)
                    : gpu.CreateShardedKvQuantSequence(_ => Codecs(spec, shape.KvHeads, shape.HeadDim), sink, layout));
                double rel = RelDiff(want, got);
                bool onChunks = OnChunks(layout);
                output.WriteLine($"books-19m {spec} sink {sink} {layout}: {ids.Length} positions, logits max rel diff {rel:E2}" +
                                 $"{(want.AsSpan().SequenceEqual(got) ? " (bit for bit)" : "")}; plans aligned {plans.Aligned}, unaligned {plans.Unaligned}");
                // Every case runs and prints before the verdict (one GPU run shows them all).
                if (onChunks && plans.Unaligned != 0) failures.Add($"{spec} {layout}: {plans.Unaligned} attention calls not on the unsharded splits");
                if (rel > (onChunks ? Tolerance : UnalignedLogitTolerance)) failures.Add($"{spec} {layout}: logits rel diff {rel:E2}");
            }
        }
        Assert.True(failures.Count == 0, string.Join("; ", failures));
    }

    [GpuFact]
    public void ShardsStoreTheUnshardedBytes()
    {
        // f16 (keys rotated at their global positions) and KVQuant (pre-RoPE codes, outlier slots, value zero/range: encoded
        // token by token, sinks in shard 0): whatever the whole-block boundaries, shard s holds at its slots the bytes the
        // unsharded cache holds at positions First[s] + slot, after prompt chunks of 37 rows that cross the boundaries.
        const int hd = 64;
        var cfg = new ModelConfig
        {
            Architecture = "llama", Dim = 8 * hd, Layers = 2, Heads = 8, KvHeads = 2, HeadDim = hd, FfnDim = 64, VocabSize = 32,
            NormEps = 1e-5f, RopeBase = 10000f, RopeDims = hd, RopeStyle = RopeStyle.Normal, ContextLength = 4096,
        };
        using var model = CudaTransformer.CreateRandom(cfg, new CudaModelOptions(CudaWeightType.F32, MaxBatch: 48, ContiguousNuq: false));
        var shape = model.KvShape;
        foreach (var (spec, sink) in new[] { ("f16", 0), ("nuq4-1%", 3), ("nuq2", 0) })
            foreach (var layout in new[] { new ShardLayout([256, 512, 256, 512]), new ShardLayout([128, 640, 128, 384, 256, 128]) })
            {
                int tokens = (int)layout.Total - 45;
                using var whole = spec == "f16"
                    ? (CudaKvSequence)model.CreateSequence(new KvCacheConfig("f16", "f16"), (int)layout.Total)
                    : model.CreateKvQuantSequence(_ => Codecs(spec, shape.KvHeads, hd), sink, (int)layout.Total, contiguousNuq: false);
                using var sharded = spec == "f16"
                    ? model.CreateShardedSequence(new KvCacheConfig("f16", "f16"), layout)
                    : model.CreateShardedKvQuantSequence(_ => Codecs(spec, shape.KvHeads, hd), sink, layout);
                var rng = new Random(hd + layout.Shards + spec.Length);
                for (int done = 0; done < tokens;)
                {
                    int n = Math.Min(37, tokens - done);
                    // Keys with a few large channels, so that KVQuant's outlier slots fill.
                    var k = Random(rng, n * shape.KvDim).Select((x, i) => i % 17 == 3 ? 6 * x : x).ToArray();
                    var v = Random(rng, n * shape.KvDim);
                    for (int l = 0; l < shape.Layers; l++)
                    {
                        whole.Append(l, k, v, n);
                        sharded.Append(l, k, v, n);
                    }
                    whole.Commit(n);
                    sharded.Commit(n);
                    done += n;
                }
                long bytes = 0;
                for (int s = 0; s < layout.Shards; s++)
                {
                    int held = layout.Held(s, tokens);
                    for (int l = 0; l < shape.Layers; l++)
                    {
                        var want = whole.StoredBytes(l, (int)layout.First[s], held);
                        var got = sharded.Shard(s)!.StoredBytes(l, 0, held);
                        Assert.True(want.Length > 0 && want.AsSpan().SequenceEqual(got), $"{spec} {layout}: shard {s} layer {l} holds other bytes than the unsharded cache");
                        bytes += want.Length;
                    }
                }
                output.WriteLine($"{spec} sink {sink} {layout}: {tokens} tokens, {bytes:N0} stored bytes equal");
            }
    }

    [GpuFact]
    public void ShardedSequenceRefusesWhatDoesNotFit()
    {
        using var loaded = ModelLoader.Load(BooksGguf());
        using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(CudaWeightType.F32, MaxBatch: 48));
        using var seq = gpu.CreateShardedSequence(new KvCacheConfig("f16", "f16"), new ShardLayout([128, 128]));
        var logits = new float[loaded.Weights.Config.VocabSize];
        var full = Assert.Throws<InvalidOperationException>(() => gpu.Forward(new int[257], seq, logits));
        Assert.Contains("full", full.Message);
        var e = Assert.Throws<ArgumentException>(() => gpu.CreateShardedKvQuantSequence(_ => Codecs("nuq4", 6, 64), 200, new ShardLayout([128, 256])));
        Assert.Contains("sink", e.Message);
    }

    [NcclFact]
    public void NcclWorldSizeOneRunsTheRealPath()
    {
        using var loaded = ModelLoader.Load(BooksGguf());
        var cfg = loaded.Weights.Config;
        using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(CudaWeightType.F32, MaxBatch: 48, ContiguousNuq: false));
        output.WriteLine($"NCCL {NcclCommunicator.Version()} on {gpu.DeviceInfo.Name}");
        var id = NcclCommunicator.CreateUniqueId();
        Assert.Equal(256, id.Length);
        using var comm = NcclCommunicator.Create(gpu.Context, 0, 1, id);
        Assert.Equal((0, 1), (comm.Rank, comm.WorldSize));
        // The collectives themselves: an all-reduce of one rank leaves the buffer as it was; an all-gather of one rank too.
        var data = Enumerable.Range(0, 1000).Select(i => (float)Math.Sin(i)).ToArray();
        using (var buf = gpu.Context.Upload(data))
        {
            comm.AllReduce(buf.Pointer, data.Length);
            comm.AllGather(buf.Pointer, data.Length * 4L);
            comm.Synchronize();
            Assert.Equal(data, buf.Download<float>(data.Length));
        }
        // The model over a one-shard sequence whose states go through ncclAllGather, against the unsharded sequence.
        var ids = new int[300];
        var rng = new Random(4);
        ids[0] = 1;
        for (int i = 1; i < ids.Length; i++) ids[i] = rng.Next(3, cfg.VocabSize);
        var want = new float[ids.Length * cfg.VocabSize];
        var got = new float[want.Length];
        var kv = new KvCacheConfig("f16", "f16");
        // The same chunks on both sides (a 290-token prompt, then 10 decode steps): with one shard the split plan and the
        // fold are the unsharded ones, so only the all-gather is new (run 28 compared a 300-token prompt against
        // 290 + 10 steps, other kernels for the last rows: 5.5e-5).
        void Run(IKvSequence s, float[] logits)
        {
            gpu.Forward(ids.AsSpan(0, 290), s, default, logits.AsSpan(0, 290 * cfg.VocabSize));
            for (int t = 290; t < ids.Length; t++) gpu.Forward(ids.AsSpan(t, 1), s, default, logits.AsSpan(t * cfg.VocabSize, cfg.VocabSize));
        }
        using (var s = (CudaKvSequence)gpu.CreateSequence(kv, 384)) Run(s, want);
        using (var s = gpu.CreateShardedSequence(kv, ShardLayout.Even(384, 1), comm))
        {
            Run(s, got);
            comm.Synchronize();
        }
        double rel = RelDiff(want, got);
        output.WriteLine($"NCCL world size 1, books-19m f16 cache: logits max rel diff {rel:E2}");
        Assert.True(rel <= 1e-6, $"logits rel diff {rel:E2}");
    }
}
