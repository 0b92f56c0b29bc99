using Kvq.Cache;
using Kvq.Cuda.Model;
using Kvq.Model;
using Xunit.Abstractions;

namespace Kvq.Cuda.Tests;

/// <summary>Decode steps replayed from a CUDA graph (<see cref="CudaTransformer.DecodeGraphs"/>) against the direct
/// launches, on books-19m: the same logits after every step of a greedy run that crosses a split-count boundary (and a
/// new 128-token block), a prefill chunk between graph steps, and two sequences taking turns.</summary>
public class DecodeGraphGpuTests(ITestOutputHelper output)
{
    private const int Prompt = 90, Steps = 64;   // counts 91..154: the split count goes from 1 to 2 at 129

    [GpuFact]
    public void F16CacheGivesTheDirectLogits() => Compare(CudaWeightType.F16, "f16");

    [GpuFact]
    public void F16CacheWithF32WeightsGivesTheDirectLogits() => Compare(CudaWeightType.F32, "f16");

    [GpuFact]
    public void KvQuantCacheGivesTheDirectLogits() => Compare(CudaWeightType.F16, "nuq4-1%");

    [GpuFact]
    public void SequencesTakingTurnsRecaptureAndStayExact()
    {
        using var loaded = ModelLoader.Load(CudaModelGpuTests.BooksGguf());
        var cfg = loaded.Weights.Config;
        using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(CudaWeightType.F16, DecodeGraphs: false));
        int seed = 23;
        output.WriteLine($"seed {seed}");
        var rng = new Random(seed);
        int[][] prompts = [[.. Enumerable.Range(0, 40).Select(_ => rng.Next(3, cfg.VocabSize))], [.. Enumerable.Range(0, 61).Select(_ => rng.Next(3, cfg.VocabSize))]];
        List<float[]> Run(bool graphs)
        {
            gpu.DecodeGraphs = graphs;
            var rows = new List<float[]>();
            using var a = (CudaKvSequence)gpu.CreateSequence(new KvCacheConfig("f16", "f16"), 256);
            using var b = (CudaKvSequence)gpu.CreateSequence(new KvCacheConfig("f16", "f16"), 256);
            var seqs = new[] { a, b };
            var logits = new[] { new float[cfg.VocabSize], new float[cfg.VocabSize] };
            for (int s = 0; s < 2; s++) gpu.Forward(prompts[s], seqs[s], logits[s]);
            // Two steps of a, three of b, ...: each switch meets a graph of the other sequence.
            for (int round = 0; round < 8; round++)
                for (int s = 0; s < 2; s++)
                    for (int k = 0; k < 2 + s; k++)
                    {
                        gpu.Forward([Bench.ThroughputBenchmark.Argmax(logits[s])], seqs[s], logits[s]);
                        rows.Add((float[])logits[s].Clone());
                    }
            return rows;
        }
        var want = Run(graphs: false);
        var (replays0, captures0) = gpu.GraphStats;
        var got = Run(graphs: true);
        var (replays, captures) = gpu.GraphStats;
        Assert.Null(gpu.GraphFailure);
        output.WriteLine($"replays {replays - replays0}, captures {captures - captures0}");
        Assert.True(replays - replays0 > 0, "no step was replayed from a graph");
        AssertSame(want, got);
    }

    /// <summary>Past ~33k tokens a split spans 2 blocks (books-19m on an H100), so some replayed steps take a new block:
    /// its table entry must reach the device before the replay. 34,000 tokens of synthetic KV, then 200 steps.</summary>
    [GpuFact]
    public void ReplaysThatTakeANewBlockStayExact()
    {
        using var loaded = ModelLoader.Load(CudaModelGpuTests.BooksGguf());
        var cfg = loaded.Weights.Config;
        using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(CudaWeightType.F16, DecodeGraphs: false));
        const int filled = 34_000, steps = 200;
        int sms = gpu.DeviceInfo.Multiprocessors;
        var splits = Enumerable.Range(filled + 1, steps).Select(c => AttentionSplit.For(c, 1, cfg.KvHeads, sms, CudaKvSequence.MaxSplitStates)).ToList();
        // Steps whose slot opens a block while the split stays that of the step before: replayed with a new block.
        int newBlockReplays = Enumerable.Range(1, steps - 1).Count(i => (filled + i) % CudaKvCache.BlockTokens == 0 && splits[i] == splits[i - 1]);
        output.WriteLine($"{sms} SMs: {splits.Distinct().Count()} split shapes, {newBlockReplays} steps replayed onto a new block");
        List<float[]> Run(bool graphs)
        {
            gpu.DecodeGraphs = graphs;
            using var seq = (CudaKvSequence)gpu.CreateSequence(new KvCacheConfig("f16", "f16"), filled + steps + 8);
            gpu.FillSyntheticKv([seq], filled, 4096, seed: 29);
            var rows = new List<float[]>();
            var logits = new float[cfg.VocabSize];
            int token = 1;
            for (int i = 0; i < steps; i++)
            {
                gpu.Forward([token], seq, logits);
                rows.Add((float[])logits.Clone());
                token = Bench.ThroughputBenchmark.Argmax(logits);
            }
            return rows;
        }
        var want = Run(graphs: false);
        var got = Run(graphs: true);
        Assert.Null(gpu.GraphFailure);
        output.WriteLine($"graph stats {gpu.GraphStats}");
        if (newBlockReplays == 0) output.WriteLine("this device's split plan opens no block inside a replayed shape here: only the exactness is checked");
        Assert.True(gpu.GraphStats.Replays > 0);
        AssertSame(want, got);
    }

    private void Compare(CudaWeightType weights, string kv)
    {
        using var loaded = ModelLoader.Load(CudaModelGpuTests.BooksGguf());
        var cfg = loaded.Weights.Config;
        using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(weights, DecodeGraphs: false));
        int seed = 17;
        output.WriteLine($"seed {seed}, {weights} weights, {kv} cache, device {gpu.Device}");
        var rng = new Random(seed);
        var prompt = new int[Prompt];
        prompt[0] = 1;
        for (int i = 1; i < prompt.Length; i++) prompt[i] = rng.Next(3, cfg.VocabSize);
        int[] chunk = [.. Enumerable.Range(0, 5).Select(_ => rng.Next(3, cfg.VocabSize))];
        int capacity = Prompt + Steps + chunk.Length + 8;

        List<float[]> Run(bool graphs, out int[] tokens)
        {
            gpu.DecodeGraphs = graphs;
            using var seq = kv == "f16"
                ? (CudaKvSequence)gpu.CreateSequence(new KvCacheConfig("f16", "f16"), capacity)
                : gpu.CreateKvQuantSequence(_ => ShardedAttentionGpuTests.Codecs(kv, cfg.KvHeads, cfg.HeadDim), 1, capacity, contiguousNuq: false);
            var rows = new List<float[]>();
            var picked = new List<int>();
            var logits = new float[cfg.VocabSize];
            gpu.Forward(prompt, seq, logits);
            void Step()
            {
                int t = Bench.ThroughputBenchmark.Argmax(logits);
                picked.Add(t);
                gpu.Forward([t], seq, logits);
                rows.Add((float[])logits.Clone());
            }
            for (int i = 0; i < Steps; i++) Step();
            // A prefill chunk between graph steps (the direct path over the same buffers), then graph steps again.
            gpu.Forward(chunk, seq, logits);
            rows.Add((float[])logits.Clone());
            for (int i = 0; i < 3; i++) Step();
            Assert.Equal(Prompt + Steps + chunk.Length + 3, seq.Length);
            tokens = [.. picked];
            return rows;
        }

        var want = Run(graphs: false, out var wantTokens);
        Assert.Equal((0L, 0L), gpu.GraphStats);
        var got = Run(graphs: true, out var gotTokens);
        Assert.Null(gpu.GraphFailure);
        var (replays, captures) = gpu.GraphStats;
        // One capture per split shape met, after a direct step of that shape; every other decode step replays.
        var splits = Enumerable.Range(Prompt + 1, Steps).Select(c => AttentionSplit.For(c, 1, cfg.KvHeads, gpu.DeviceInfo.Multiprocessors, CudaKvSequence.MaxSplitStates))
            .Distinct().Count();
        output.WriteLine($"replays {replays}, captures {captures}, split shapes in the first {Steps} steps {splits}");
        Assert.True(splits >= 2, "the run should cross a split-count boundary");
        Assert.True(captures >= splits, $"{captures} captures for {splits} split shapes");
        Assert.True(replays >= Steps - splits, $"{replays} replays of {Steps + 3} decode steps");
        Assert.Equal(wantTokens, gotTokens);
        AssertSame(want, got);
    }

    /// <summary>Each step's logits within 1e-6 relative L2 of the direct path's (the same kernels with the same values
    /// read from the device instead of arguments: expected bit for bit).</summary>
    private void AssertSame(List<float[]> want, List<float[]> got)
    {
        Assert.Equal(want.Count, got.Count);
        int identical = 0;
        for (int s = 0; s < want.Count; s++)
        {
            double num = 0, den = 0;
            for (int i = 0; i < want[s].Length; i++) { double d = want[s][i] - got[s][i]; num += d * d; den += (double)want[s][i] * want[s][i]; }
            double rel = Math.Sqrt(num / den);
            Assert.True(rel <= 1e-6, $"step {s}: logits rel L2 {rel:E2} between graph and direct decode");
            if (want[s].AsSpan().SequenceEqual(got[s])) identical++;
        }
        output.WriteLine($"{identical} of {want.Count} steps bitwise identical");
    }
}
