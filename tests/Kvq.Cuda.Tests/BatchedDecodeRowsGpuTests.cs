using Kvq.Cache;
using Kvq.Cuda.Model;
using Kvq.Model;
using Xunit.Abstractions;

namespace Kvq.Cuda.Tests;

/// <summary>
/// A batched step's one-token rows of one paged cache go through one append and one attention launch a layer
/// (Model/DecodeRows, model.cu DecodeRow): each row must see exactly its own sequence, whatever its length (a row
/// starting a new block, rows of different split counts) and wherever its token sits in the step (a decode row of a
/// sequence with a cache of its own between the rows, a prompt chunk after them). The same batched steps with the rows
/// launched per sequence (<see cref="CudaTransformer.BatchedDecodeRows"/> off) give the same logits bit for bit: the
/// products are the same, and each row's attention is its own launch's arithmetic. Against each sequence stepping
/// alone (other product shapes: f32 rounding) the f16 cache agrees to 1e-4 at every step; the KVQuant cache at the
/// first step only, since a key rounded differently can take another code and the difference then stays in the cache.
/// </summary>
public class BatchedDecodeRowsGpuTests(ITestOutputHelper output)
{
    [GpuTheory]
    [InlineData("f16", CudaWeightType.F32)]
    [InlineData("nuq4-1%", CudaWeightType.F16)]
    public void EachRowGetsTheLogitsOfItsOwnStep(string kv, CudaWeightType weights)
    {
        using var loaded = ModelLoader.Load(CudaModelGpuTests.BooksGguf());
        var cfg = loaded.Weights.Config;
        using var gpu = CudaTransformer.Load(loaded.Weights, new CudaModelOptions(weights, MaxBatch: 64, DecodeGraphs: false));
        int seed = 23;
        var rng = new Random(seed);
        // 127: the second step's row takes slot 128, a new block; 700: more splits than the short rows.
        int[] lengths = [37, 127, 5, 700];
        int steps = 4, vocab = cfg.VocabSize;
        int[][] prompts = [.. lengths.Select(n => Enumerable.Range(0, n).Select(i => i == 0 ? 1 : rng.Next(3, vocab)).ToArray())];
        int[] chunk = [.. Enumerable.Range(0, 9).Select(_ => rng.Next(3, vocab))];
        output.WriteLine($"seed {seed}, {kv} cache, {weights} weights, device {gpu.Device}");
        using var pool = kv == "f16"
            ? gpu.CreateCache(new KvCacheConfig("f16", "f16"), 4096)
            : gpu.CreateKvQuantCache(_ => ShardedAttentionGpuTests.Codecs(kv, cfg.KvHeads, cfg.HeadDim), 1, 4096);

        // Alone: each prompt, then greedy steps one at a time.
        var alone = new float[lengths.Length][][];
        var picked = new int[lengths.Length][];
        for (int s = 0; s < lengths.Length; s++)
        {
            using var seq = pool.CreateSequence(1024);
            var logits = new float[vocab];
            gpu.Forward(prompts[s], seq, logits);
            alone[s] = new float[steps][];
            picked[s] = new int[steps];
            for (int i = 0; i < steps; i++)
            {
                picked[s][i] = Bench.ThroughputBenchmark.Argmax(logits);
                gpu.Forward([picked[s][i]], seq, logits);
                alone[s][i] = (float[])logits.Clone();
            }
        }
        Assert.Equal(pool.Blocks, pool.FreeBlocks);

        // Together: the same prompts, then every step one ForwardBatch of the four rows (the alone run's tokens); in
        // step 1 the decode row of a sequence with a cache of its own sits between rows 1 and 2 (so rows 2 and 3 are
        // tokens 3 and 4 of the step) and a prompt chunk of a sixth sequence of the pool comes last.
        float[][] Together(bool rows)
        {
            gpu.BatchedDecodeRows = rows;
            var seqs = lengths.Select(_ => pool.CreateSequence(1024)).ToArray();
            using var other = pool.CreateSequence(64);
            using var own = kv == "f16"
                ? (CudaKvSequence)gpu.CreateSequence(new KvCacheConfig("f16", "f16"), 64)
                : gpu.CreateKvQuantSequence(_ => ShardedAttentionGpuTests.Codecs(kv, cfg.KvHeads, cfg.HeadDim), 1, 64, contiguousNuq: false);
            var got = new float[steps][];
            try
            {
                var scratch = new float[vocab];
                for (int s = 0; s < lengths.Length; s++) gpu.Forward(prompts[s], seqs[s], scratch);
                gpu.Forward(chunk, own, scratch);
                for (int i = 0; i < steps; i++)
                {
                    var tokens = new List<int>();
                    var segments = new List<BatchSegment>();
                    for (int s = 0; s < lengths.Length; s++)
                    {
                        if (i == 1 && s == 2)
                        {
                            segments.Add(new BatchSegment(own, tokens.Count, 1, Decode: true, Logits: false));
                            tokens.Add(chunk[0]);
                        }
                        segments.Add(new BatchSegment(seqs[s], tokens.Count, 1, Decode: true, Logits: true));
                        tokens.Add(picked[s][i]);
                    }
                    if (i == 1)
                    {
                        segments.Add(new BatchSegment(other, tokens.Count, chunk.Length, Decode: false, Logits: false));
                        tokens.AddRange(chunk);
                    }
                    got[i] = new float[lengths.Length * vocab];
                    gpu.ForwardBatch(tokens.ToArray(), segments.ToArray(), got[i]);
                }
                for (int s = 0; s < lengths.Length; s++) Assert.Equal(lengths[s] + steps, seqs[s].Length);
                Assert.Equal(chunk.Length, other.Length);
                Assert.Equal(chunk.Length + 1, own.Length);
            }
            finally
            {
                foreach (var s in seqs) s.Dispose();
            }
            return got;
        }

        var oneLaunch = Together(rows: true);
        var perSequence = Together(rows: false);
        Assert.Equal(pool.Blocks, pool.FreeBlocks);
        for (int i = 0; i < steps; i++)
        {
            Assert.True(oneLaunch[i].AsSpan().SequenceEqual(perSequence[i]), $"step {i}: the rows in one launch differ from the rows launched per sequence");
            for (int s = 0; s < lengths.Length; s++)
            {
                var row = oneLaunch[i].AsSpan(s * vocab, vocab);
                double num = 0, den = 0;
                for (int j = 0; j < vocab; j++) { double d = alone[s][i][j] - row[j]; num += d * d; den += (double)alone[s][i][j] * alone[s][i][j]; }
                double rel = Math.Sqrt(num / den);
                output.WriteLine($"step {i} row {s} (length {lengths[s] + i + 1}): rel L2 {rel:E2} vs its own step");
                if (kv != "f16" && i > 0) continue;
                double tolerance = kv == "f16" ? 1e-4 : 2e-3;
                Assert.True(rel < tolerance, $"step {i}, sequence {s} of length {lengths[s]}: rel L2 {rel:E2} vs its own step (tolerance {tolerance:E0})");
                Assert.Equal(Bench.ThroughputBenchmark.Argmax(alone[s][i]), Bench.ThroughputBenchmark.Argmax(row));
            }
        }
    }
}
