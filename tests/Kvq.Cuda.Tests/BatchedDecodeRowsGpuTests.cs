using Kvq.Cache;
using Kvq.Cuda.Model;
using Kvq.Model;
using Xunit.Abstractions;

namespace Kvq.Cuda.Tests;

/// <summary>
/// A batched step's one-token rows of one paged cache go through one append and one attention launch a layer
/// (Model/DecodeRows, model.cu DecodeRow): each row must see exactly its own sequence, as if it had stepped alone,
/// whatever its length (a row starting a new block, rows of different split counts) and wherever its token sits in
/// the step (a prompt chunk of another sequence between the rows).
/// </summary>
public class BatchedDecodeRowsGpuTests(ITestOutputHelper output)
{
    [GpuTheory]
    [InlineData("f16", CudaWeightType.F32, 1e-4)]
    [InlineData("nuq4-1%", CudaWeightType.F16, 2e-3)]
    public void EachRowGetsTheLogitsOfItsOwnStep(string kv, CudaWeightType weights, double tolerance)
    {
        using var loaded = ModelLoader.Load(CudaModelGpuTests.BooksGguf());
        var cfg = loaded.Weights.Config;
        using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(weights, MaxBatch: 64, DecodeGraphs: false));
        int seed = 23;
        var rng = new Random(seed);
        // 127: the second step's row takes slot 128, a new block; 700: more splits than the short rows.
        int[] lengths = [37, 127, 5, 700];
        int steps = 4;
        int[][] prompts = [.. lengths.Select(n => Enumerable.Range(0, n).Select(i => i == 0 ? 1 : rng.Next(3, cfg.VocabSize)).ToArray())];
        int[] chunk = [.. Enumerable.Range(0, 9).Select(_ => rng.Next(3, cfg.VocabSize))];
        output.WriteLine($"seed {seed}, {kv} cache, {weights} weights, device {gpu.Device}");
        using var pool = kv == "f16"
            ? gpu.CreateCache(new KvCacheConfig("f16", "f16"), 4096)
            : gpu.CreateKvQuantCache(_ => ShardedAttentionGpuTests.Codecs(kv, cfg.KvHeads, cfg.HeadDim), 1, 4096);
        int vocab = cfg.VocabSize;

        // Alone: each prompt, then greedy steps one at a time.
        var want = new float[lengths.Length][][];
        var picked = new int[lengths.Length][];
        for (int s = 0; s < lengths.Length; s++)
        {
            using var seq = pool.CreateSequence(1024);
            var logits = new float[vocab];
            gpu.Forward(prompts[s], seq, logits);
            want[s] = new float[steps][];
            picked[s] = new int[steps];
            for (int i = 0; i < steps; i++)
            {
                picked[s][i] = Bench.ThroughputBenchmark.Argmax(logits);
                gpu.Forward([picked[s][i]], seq, logits);
                want[s][i] = (float[])logits.Clone();
            }
        }
        Assert.Equal(pool.Blocks, pool.FreeBlocks);

        // Together: the same prompts alone, then every step one ForwardBatch of the four rows; in step 1 a prompt chunk
        // of a fifth sequence sits between rows 1 and 2.
        var seqs = lengths.Select(_ => pool.CreateSequence(1024)).ToArray();
        using var other = pool.CreateSequence(64);
        try
        {
            var scratch = new float[vocab];
            for (int s = 0; s < lengths.Length; s++) gpu.Forward(prompts[s], seqs[s], scratch);
            for (int i = 0; i < steps; i++)
            {
                bool mixed = i == 1;
                var tokens = new List<int>();
                var segments = new List<BatchSegment>();
                for (int s = 0; s < lengths.Length; s++)
                {
                    if (mixed && s == 2)
                    {
                        segments.Add(new BatchSegment(other, tokens.Count, chunk.Length, Decode: false, Logits: false));
                        tokens.AddRange(chunk);
                    }
                    segments.Add(new BatchSegment(seqs[s], tokens.Count, 1, Decode: true, Logits: true));
                    tokens.Add(picked[s][i]);
                }
                var got = new float[lengths.Length * vocab];
                gpu.ForwardBatch(tokens.ToArray(), segments.ToArray(), got);
                for (int s = 0; s < lengths.Length; s++)
                {
                    var row = got.AsSpan(s * vocab, vocab);
                    double num = 0, den = 0;
                    for (int j = 0; j < vocab; j++) { double d = want[s][i][j] - row[j]; num += d * d; den += (double)want[s][i][j] * want[s][i][j]; }
                    double rel = Math.Sqrt(num / den);
                    output.WriteLine($"step {i} row {s} (length {seqs[s].Length}): rel L2 {rel:E2}");
                    Assert.True(rel < tolerance, $"step {i}, sequence {s} of length {lengths[s]}: rel L2 {rel:E2} vs its own step (tolerance {tolerance:E0})");
                    Assert.Equal(Bench.ThroughputBenchmark.Argmax(want[s][i]), Bench.ThroughputBenchmark.Argmax(row));
                }
            }
            for (int s = 0; s < lengths.Length; s++) Assert.Equal(lengths[s] + steps, seqs[s].Length);
            Assert.Equal(chunk.Length, other.Length);
        }
        finally
        {
            foreach (var s in seqs) s.Dispose();
        }
        other.Dispose();
        Assert.Equal(pool.Blocks, pool.FreeBlocks);
    }
}
