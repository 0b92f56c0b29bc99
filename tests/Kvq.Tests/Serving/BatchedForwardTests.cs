using Kvq.Cache;
using Kvq.Cache.Policies;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Tests.Serving;

/// <summary>The batched step gives each sequence bitwise what it gets alone: the serving engine's exactness rests on it.</summary>
public class BatchedForwardTests
{
    [Theory]
    [InlineData(GgmlType.F16, 1, 37)]
    [InlineData(GgmlType.F16, 7, 384)]
    [InlineData(GgmlType.F16, 13, 67)]
    [InlineData(GgmlType.F16, 21, 160)]
    [InlineData(GgmlType.F16, 16, 384)] // 4 x 4 panels only (45 rows: 22 and 23 per thread, so row tails too)
    [InlineData(GgmlType.F16, 9, 183)]  // odd 16-column chunk, scalar tail: the per-output finish
    [InlineData(GgmlType.F32, 5, 96)]
    [InlineData(GgmlType.Q8_0, 6, 64)]
    public unsafe void MatVecRowsEqualsMatVecPerRowBitwise(GgmlType type, int n, int cols)
    {
        var rng = new Random(1234 + n * 31 + cols);
        int rows = 45;
        var w = RandomMatrix(type, rows, cols, rng);
        var x = new float[n * cols];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        // Quantized: both ways of rounding the activations to 8 bits (integer dots, float kernels over the round trip).
        foreach (bool? ints in type == GgmlType.Q8_0 ? new bool?[] { true, false } : [null])
        {
            w.IntegerDots = ints;
            var batched = new float[n * rows];
            w.MatVecRows(x, batched, n, new Parallelism(2));
            for (int t = 0; t < n; t++)
            {
                var alone = new float[rows];
                w.MatVec(x.AsSpan(t * cols, cols), alone, Parallelism.Single);
                for (int r = 0; r < rows; r++)
                    Assert.True(BitConverter.SingleToInt32Bits(alone[r]) == BitConverter.SingleToInt32Bits(batched[t * rows + r]),
                        $"{type} n={n} cols={cols}: token {t} row {r}: alone {alone[r]:R}, batched {batched[t * rows + r]:R}");
            }
        }
    }

    /// <summary>Three sequences prefilled alone, then decoded together in one batched step per token (with a
    /// prompt chunk of a fourth sequence in the same steps): every decode row's logits equal a lone decode's.</summary>
    [Fact]
    public void BatchedDecodeEqualsLoneDecodeOnBooks()
    {
        var m = EngineFixtures.Books;
        var batchedModel = EngineFixtures.Model(m, 96);
        var soloModel = EngineFixtures.Model(m, 64);
        var cache = new PagedKvCache(batchedModel.KvShape, KvCacheConfig.Parse("f16"));
        var soloCache = new PagedKvCache(soloModel.KvShape, KvCacheConfig.Parse("f16"));
        int vocab = m.Weights.Config.VocabSize;
        int[][] prompts = [EngineFixtures.MobyPrompt(100, 45), EngineFixtures.MobyPrompt(900, 70), EngineFixtures.MobyPrompt(3000, 18)];
        var batched = prompts.Select(_ => cache.CreateSequence()).ToArray();
        var solo = prompts.Select(_ => soloCache.CreateSequence()).ToArray();
        var logits = new float[vocab];
        var next = new int[prompts.Length];
        for (int i = 0; i < prompts.Length; i++)
        {
            batchedModel.Forward(prompts[i], batched[i], logits);
            soloModel.Forward(prompts[i], solo[i], logits);
            next[i] = Argmax(logits);
        }
        var extra = cache.CreateSequence();
        var extraPrompt = EngineFixtures.MobyPrompt(5000, 48);
        var batchLogits = new float[4 * vocab];
        for (int step = 0; step < 6; step++)
        {
            var tokens = new List<int>(next);
            var segments = new List<BatchSegment>();
            for (int i = 0; i < prompts.Length; i++) segments.Add(new BatchSegment(batched[i], i, 1, Decode: true, Logits: true));
            int chunk = step < 3 ? 16 : 0;
            if (chunk > 0)
            {
                tokens.AddRange(extraPrompt.AsSpan(step * 16, 16).ToArray());
                segments.Add(new BatchSegment(extra, prompts.Length, 16, Decode: false, Logits: step == 2));
            }
            batchedModel.ForwardBatch(tokens.ToArray(), segments.ToArray(), batchLogits);
            for (int i = 0; i < prompts.Length; i++)
            {
                soloModel.Forward([next[i]], solo[i], logits);
                var row = batchLogits.AsSpan(i * vocab, vocab);
                for (int v = 0; v < vocab; v++)
                    Assert.True(BitConverter.SingleToInt32Bits(logits[v]) == BitConverter.SingleToInt32Bits(row[v]),
                        $"step {step} sequence {i} vocab {v}: alone {logits[v]:R}, batched {row[v]:R}");
                next[i] = Argmax(logits);
            }
        }
    }

    /// <summary>Five threads (more than books-19m's two KV heads): sequences of 600+ tokens split their blocks
    /// (split-K) and short ones do not, all attended in one region per layer; a token policy's sequence (h2o, which
    /// observes the attention) decodes in the same steps. Every decode row's logits equal a lone decode's, bitwise.</summary>
    [Fact]
    public void BatchedDecodeEqualsLoneDecodeWithSplitKAndAPolicy()
    {
        var m = EngineFixtures.Books;
        using var par = new Parallelism(5);
        var batchedModel = new Transformer(m.Weights, par, 64);
        var soloModel = new Transformer(m.Weights, par, 64);
        int vocab = m.Weights.Config.VocabSize;
        string[] specs = ["f16", "f16", "f16", "f16 h2o"];
        int[][] prompts = [EngineFixtures.MobyPrompt(100, 700), EngineFixtures.MobyPrompt(900, 40), EngineFixtures.MobyPrompt(2000, 530),
            EngineFixtures.MobyPrompt(3000, 300)];
        var batched = new IKvSequence[prompts.Length];
        var solo = new IKvSequence[prompts.Length];
        var logits = new float[vocab];
        var next = new int[prompts.Length];
        for (int i = 0; i < prompts.Length; i++)
        {
            batched[i] = new PagedKvCache(batchedModel.KvShape, Config(specs[i])).CreateSequence();
            solo[i] = new PagedKvCache(soloModel.KvShape, Config(specs[i])).CreateSequence();
            batchedModel.Forward(prompts[i], batched[i], logits);
            soloModel.Forward(prompts[i], solo[i], logits);
            next[i] = Argmax(logits);
        }
        var batchLogits = new float[prompts.Length * vocab];
        var segments = Enumerable.Range(0, prompts.Length).Select(i => new BatchSegment(batched[i], i, 1, Decode: true, Logits: true)).ToArray();
        for (int step = 0; step < 4; step++)
        {
            batchedModel.ForwardBatch(next, segments, batchLogits);
            for (int i = 0; i < prompts.Length; i++)
            {
                soloModel.Forward([next[i]], solo[i], logits);
                var row = batchLogits.AsSpan(i * vocab, vocab);
                for (int v = 0; v < vocab; v++)
                    Assert.True(BitConverter.SingleToInt32Bits(logits[v]) == BitConverter.SingleToInt32Bits(row[v]),
                        $"step {step} sequence {i} ({specs[i]}) vocab {v}: alone {logits[v]:R}, batched {row[v]:R}");
                next[i] = Argmax(logits);
            }
        }
    }

    /// <summary>An odd number of sequences (11) at odd contexts around the 32-token block edges (1 to 200 tokens of
    /// random ids), decoded together at 3 threads with the batched step's fast paths on (weight rows prefetched a block
    /// ahead, f16 tiles without inf/NaN widened the cheap way), against each sequence decoded alone with them off (the
    /// plain kernels): every row's logits equal, bitwise.</summary>
    [Fact]
    public void OddBatchWithFastPathsEqualsLoneDecodeWithPlainKernels()
    {
        var m = EngineFixtures.Books;
        using var par = new Parallelism(3);
        var batchedModel = new Transformer(m.Weights, par, 64);
        var soloModel = new Transformer(m.Weights, par, 64); // the same threads: a prompt's GEMM panels start where a thread's rows do
        int vocab = m.Weights.Config.VocabSize;
        var rng = new Random(TestSeeds.Of("oddbatch"));
        int[] contexts = [1, 5, 31, 32, 33, 47, 64, 65, 95, 127, 200];
        var cache = new PagedKvCache(batchedModel.KvShape, KvCacheConfig.Parse("f16"));
        var soloCache = new PagedKvCache(soloModel.KvShape, KvCacheConfig.Parse("f16"));
        var batched = new IKvSequence[contexts.Length];
        var solo = new IKvSequence[contexts.Length];
        var logits = new float[vocab];
        var next = new int[contexts.Length];
        try
        {
            for (int i = 0; i < contexts.Length; i++)
            {
                var prompt = Enumerable.Range(0, contexts[i]).Select(_ => rng.Next(3, vocab)).ToArray();
                batched[i] = cache.CreateSequence();
                solo[i] = soloCache.CreateSequence();
                batchedModel.Forward(prompt, batched[i], logits);
                soloModel.Forward(prompt, solo[i], logits);
                next[i] = Argmax(logits);
            }
            var batchLogits = new float[contexts.Length * vocab];
            var segments = Enumerable.Range(0, contexts.Length).Select(i => new BatchSegment(batched[i], i, 1, Decode: true, Logits: true)).ToArray();
            for (int step = 0; step < 5; step++)
            {
                Kvq.Tensors.Quant.HalfRowBlock.PrefetchNextRows = true;
                Kvq.Cache.Attention.HalfTileMath.FiniteWidening = true;
                // Prefetches three blocks ahead (past the ends of matrices and of short sequences), KV non-temporal
                // on odd steps: only timing may change.
                Kvq.Tensors.Quant.HalfRowBlock.PrefetchRowBlocks = 3;
                Kvq.Cache.Attention.BlockAttention.PrefetchBlocks = 3;
                Kvq.Cache.Attention.BlockAttention.NonTemporalKv = step % 2 == 1;
                batchedModel.ForwardBatch(next, segments, batchLogits);
                Kvq.Tensors.Quant.HalfRowBlock.PrefetchNextRows = false;
                Kvq.Cache.Attention.HalfTileMath.FiniteWidening = false;
                Kvq.Tensors.Quant.HalfRowBlock.PrefetchRowBlocks = 1;
                Kvq.Cache.Attention.BlockAttention.PrefetchBlocks = 1;
                Kvq.Cache.Attention.BlockAttention.NonTemporalKv = false;
                for (int i = 0; i < contexts.Length; i++)
                {
                    soloModel.Forward([next[i]], solo[i], logits);
                    var row = batchLogits.AsSpan(i * vocab, vocab);
                    for (int v = 0; v < vocab; v++)
                        Assert.True(BitConverter.SingleToInt32Bits(logits[v]) == BitConverter.SingleToInt32Bits(row[v]),
                            $"step {step} sequence {i} (context {contexts[i]}) vocab {v}: alone {logits[v]:R}, batched {row[v]:R}");
                    next[i] = rng.Next(3, vocab); // random next tokens: no argmax ties to care about
                }
            }
        }
        finally
        {
            Kvq.Tensors.Quant.HalfRowBlock.PrefetchNextRows = true;
            Kvq.Cache.Attention.HalfTileMath.FiniteWidening = true;
            Kvq.Tensors.Quant.HalfRowBlock.PrefetchRowBlocks = 2;
            Kvq.Cache.Attention.BlockAttention.PrefetchBlocks = 2;
            Kvq.Cache.Attention.BlockAttention.NonTemporalKv = false;
        }
    }

    /// <summary>The batched step's per-sequence region (biases, RoPE, the cache append with its encode) against each
    /// sequence stepped alone (<c>Forward</c>: its append on the calling thread, a decode row's
    /// activation too), same threads: two copies of 10 sequences at odd contexts across the 32-token block edges (random
    /// ids), plus a 23-token prompt chunk in some steps, the appends passing into a new 64-block arena chunk (formats that
    /// write at append), decoded at 3 threads in each format (whole-token, per-channel staging, KVQuant with its sparse
    /// outlier rows and a sink). Every logit equal bitwise, every step: an append that raced or landed in another
    /// sequence's block would show in the next step's attention. (The serial loop over the sequences was the reference
    /// behind a switch, Transformer.ParallelRest, until the parallel one won; lone steps are the engine's own promise.)</summary>
    [Theory]
    [InlineData("f16", 0, true)]
    [InlineData("q4_0", 0, true)]
    [InlineData("kivi2", 0, false)] // staged: a block's bytes are written at its seal, 32 + the residual tokens after it is allocated
    [InlineData("nuq3-1%", 1, true)]
    public void ParallelAppendsEqualLoneSteps(string spec, int sink, bool reachesNewChunk)
    {
        var m = EngineFixtures.Books;
        using var par = new Parallelism(3);
        var model = new Transformer(m.Weights, par, 64);
        int vocab = m.Weights.Config.VocabSize;
        var rng = new Random(TestSeeds.Of("parallelrest" + spec));
        var config = Cache.Storage.StorageFixtures.Config(spec, sink);
        int[] contexts = [1, 9, 31, 33, 63, 64, 95, 97, 150, 1000]; // 53 blocks after the prompts: the steps pass block 64
        var caches = new[] { new PagedKvCache(model.KvShape, config), new PagedKvCache(model.KvShape, config) };
        var seqs = new IKvSequence[2][];
        var logits = new float[vocab];
        var prompts = contexts.Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(3, vocab)).ToArray()).ToArray();
        for (int copy = 0; copy < 2; copy++)
        {
            seqs[copy] = new IKvSequence[contexts.Length + 1];
            for (int i = 0; i < contexts.Length; i++)
            {
                seqs[copy][i] = caches[copy].CreateSequence();
                model.Forward(prompts[i], seqs[copy][i], logits);
            }
            seqs[copy][^1] = caches[copy].CreateSequence(); // fed in 23-token prompt chunks
        }
        var chunkPrompt = Enumerable.Range(0, 3 * 23).Select(_ => rng.Next(3, vocab)).ToArray();
        var got = new float[2][];
        long ArenaBytes() => caches[0].Keys[0].AllocatedBytes + caches[0].Values[0].AllocatedBytes;
        long arenaBefore = ArenaBytes();
        for (int step = 0; step < 40; step++)
        {
            var tokens = new List<int>();
            for (int i = 0; i < contexts.Length; i++) tokens.Add(rng.Next(3, vocab));
            bool chunk = step % 7 == 2 && step / 7 < 3;
            if (chunk) tokens.AddRange(chunkPrompt.AsSpan(step / 7 * 23, 23).ToArray());
            var segments = Enumerable.Range(0, contexts.Length).Select(i => new BatchSegment(seqs[0][i], i, 1, Decode: true, Logits: true)).ToList();
            if (chunk) segments.Add(new BatchSegment(seqs[0][^1], contexts.Length, 23, Decode: false, Logits: true));
            got[0] = new float[segments.Count * vocab];
            got[1] = new float[segments.Count * vocab];
            model.ForwardBatch(tokens.ToArray(), segments.ToArray(), got[0]);
            for (int i = 0; i < segments.Count; i++)
                model.Forward(tokens.GetRange(segments[i].Start, segments[i].Count).ToArray(), seqs[1][i], got[1].AsSpan(i * vocab, vocab));
            for (int v = 0; v < got[0].Length; v++)
                Assert.True(BitConverter.SingleToInt32Bits(got[0][v]) == BitConverter.SingleToInt32Bits(got[1][v]),
                    $"{spec}, step {step}, row {v / vocab}, vocab {v % vocab}: batched {got[0][v]:R}, alone {got[1][v]:R}");
        }
        for (int i = 0; i < seqs[0].Length; i++) Assert.Equal(seqs[1][i].Length, seqs[0][i].Length);
        // The parallel appends reached a new 64-block chunk of the arenas (added under their lock) at least once.
        if (reachesNewChunk) Assert.True(ArenaBytes() > arenaBefore, $"{spec}: no arena chunk was added during the parallel steps");
    }

    /// <summary>The activation of a prompt chunk's or a batched step's rows split over 3 threads
    /// (<see cref="Transformer.ActivateRows"/>) against one <see cref="Transformer.Activate"/> over all rows on the
    /// calling thread, the plain reference it replaced (behind Transformer.ParallelRest until the split won): random gate
    /// and up values (fixed seed), 1 to 77 rows, odd counts included; bitwise equal, and rows past n untouched.</summary>
    [Fact]
    public void ParallelActivationEqualsOneCallOverAllRows()
    {
        var m = EngineFixtures.Books;
        using var par = new Parallelism(3);
        var model = new Transformer(m.Weights, par, 80);
        int ffn = m.Weights.Config.FfnDim;
        var rng = new Random(TestSeeds.Of("parallelactivation"));
        foreach (int n in new[] { 1, 2, 3, 5, 13, 64, 77 })
        {
            var gate = new float[(n + 1) * ffn];
            var up = new float[(n + 1) * ffn];
            for (int i = 0; i < gate.Length; i++)
            {
                gate[i] = (float)(rng.NextDouble() * 8 - 4);
                up[i] = (float)(rng.NextDouble() * 8 - 4);
            }
            var expected = (float[])gate.Clone();
            model.Activate(expected.AsSpan(0, n * ffn), up.AsSpan(0, n * ffn));
            model.ActivateRows(gate, up, n);
            for (int i = 0; i < gate.Length; i++)
                Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(gate[i]),
                    $"{n} rows: row {i / ffn}, column {i % ffn}: split {gate[i]:R}, one call {expected[i]:R}");
        }
    }

    private static KvCacheConfig Config(string spec) => spec.Split(' ') is [var kv, var policy]
        ? KvCacheConfig.Parse(kv) with { Policy = new KvPolicyConfig(KvPolicyRegistry.Parse(policy), KvBudget.Parse("0.5")) }
        : KvCacheConfig.Parse(spec);

    /// <summary>A steady-state batched decode step allocates nothing on the calling thread (no per-step buffers,
    /// segment lists or scratch): 16 sequences, between block boundaries.</summary>
    [Fact]
    public void ABatchedDecodeStepAllocatesNothing()
    {
        var model = EngineFixtures.Model(EngineFixtures.Books, 64);
        var cache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f16"));
        int vocab = model.Config.VocabSize, b = 16;
        var seqs = Enumerable.Range(0, b).Select(_ => cache.CreateSequence()).ToArray();
        var logits = new float[b * vocab];
        for (int i = 0; i < b; i++) model.Forward(EngineFixtures.MobyPrompt(300 * i, 99), seqs[i], logits.AsSpan(0, vocab));
        var segments = seqs.Select((s, i) => new BatchSegment(s, i, 1, Decode: true, Logits: true)).ToArray();
        var tokens = Enumerable.Range(100, b).ToArray();
        for (int step = 0; step < 5; step++) model.ForwardBatch(tokens, segments, logits); // positions 100..105, inside the 32-token block 96..127
        long before = GC.GetAllocatedBytesForCurrentThread();
        model.ForwardBatch(tokens, segments, logits);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void MalformedBatchesAreRefused()
    {
        var model = EngineFixtures.Model(EngineFixtures.Stories, 16);
        var cache = new PagedKvCache(model.KvShape, KvCacheConfig.Parse("f32"));
        var a = cache.CreateSequence();
        var b = cache.CreateSequence();
        var logits = new float[2 * model.Config.VocabSize];
        var e = Assert.Throws<ArgumentException>(() => model.ForwardBatch([1, 2], [new(a, 0, 1, false, true), new(b, 1, 1, true, true)], logits));
        Assert.Contains("decode segments must come before", e.Message);
        e = Assert.Throws<ArgumentException>(() => model.ForwardBatch([1, 2], [new(a, 0, 1, true, true), new(a, 1, 1, true, true)], logits));
        Assert.Contains("same sequence", e.Message);
        e = Assert.Throws<ArgumentException>(() => model.ForwardBatch([1, 2, 3], [new(a, 0, 2, true, true)], logits));
        Assert.Contains("cover 2 of 3", e.Message);
        e = Assert.Throws<ArgumentException>(() => model.ForwardBatch(new int[17], [new(a, 0, 17, false, true)], logits));
        Assert.Contains("exceeds", e.Message);
    }

    private static WeightMatrix RandomMatrix(GgmlType type, int rows, int cols, Random rng)
    {
        var values = Tensors.QuantTestData.RandomVector(rows * cols, rng);
        switch (type)
        {
            case GgmlType.F32:
                return WeightMatrix.FromFloats("w", rows, cols, values);
            case GgmlType.F16:
                var halves = values.Select(v => (Half)v).ToArray();
                return WeightMatrix.FromBytes("w", rows, cols, type, System.Runtime.InteropServices.MemoryMarshal.AsBytes(halves.AsSpan()));
            default:
                return WeightMatrix.FromBytes("w", rows, cols, type,
                    Tensors.QuantTestData.RandomBlocks(type, rows * cols / GgmlTypeInfo.BlockSize(type), rng));
        }
    }

    private static int Argmax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
