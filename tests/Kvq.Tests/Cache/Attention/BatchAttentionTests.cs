using Kvq.Cache;
using Kvq.Cache.Attention;
using Kvq.Eval;
using Kvq.Tensors;

namespace Kvq.Tests.Cache.Attention;

/// <summary>A batched step's attention in one parallel region (<see cref="BatchAttention"/>): every sequence's output
/// is bitwise what <see cref="BlockAttention.Attend"/> gives it alone, with the same threads, whatever the mix of
/// lengths (split-K on and off within one batch), query rows and thread counts.</summary>
public sealed class BatchAttentionTests
{
    private static KvShape Shape(int kvHeads, int heads, int headDim) =>
        new(2, kvHeads, heads, headDim, new Rope(headDim, headDim, 10000f, 1f, RopeStyle.Normal));

    [Theory]
    // spec, KV heads, query heads, head dim, threads, query rows per sequence (0 = a mix of 1 and 7), sink tokens
    [InlineData("f16", 2, 6, 64, 2, 1, 0)]
    [InlineData("f16", 2, 6, 64, 5, 1, 0)]     // items (2) < threads: long sequences split-K, short ones not
    [InlineData("f16", 1, 3, 48, 3, 0, 2)]     // GQA 3, odd head dim, decode rows and 7-row chunks, sinks
    [InlineData("f32", 2, 4, 32, 1, 0, 0)]     // one thread: the region runs inline
    [InlineData("q4_0", 3, 6, 64, 7, 1, 4)]
    [InlineData("kivi2", 2, 4, 64, 4, 1, 1)]   // staged recent tokens
    [InlineData("int4-ch/int4", 1, 4, 32, 6, 0, 0)] // per-channel keys
    public void BatchedEqualsOneAtATime(string spec, int kvHeads, int heads, int headDim, int threads, int rows, int sink)
    {
        var shape = Shape(kvHeads, heads, headDim);
        var cache = new PagedKvCache(shape, KvCacheConfig.Parse(spec) with { SinkTokens = sink });
        int[] lengths = [37, 1030, 300, 613, 5, 777];
        int seed = TestSeeds.Of(nameof(BatchedEqualsOneAtATime), spec, threads, rows);
        var rng = new Random(seed);
        var seqs = new PagedKvSequence[lengths.Length];
        var n = new int[lengths.Length];
        var start = new int[lengths.Length + 1];
        for (int i = 0; i < lengths.Length; i++)
        {
            seqs[i] = cache.CreateSequence();
            KvMemoryEvaluator.Fill(seqs[i], shape, lengths[i], seed + i);
            n[i] = rows > 0 ? rows : i % 2 == 0 ? 1 : 7;
            start[i + 1] = start[i] + n[i];
        }
        var q = new float[start[^1] * shape.QDim];
        for (int j = 0; j < q.Length; j++) q[j] = (float)(rng.NextDouble() * 4 - 2);
        using var par = new Parallelism(threads);
        var batch = new BatchAttention();
        for (int layer = 0; layer < shape.Layers; layer++)
        {
            var want = new float[q.Length];
            for (int i = 0; i < seqs.Length; i++)
                BlockAttention.Attend(seqs[i], layer, q.AsSpan(start[i] * shape.QDim, n[i] * shape.QDim), n[i],
                    want.AsSpan(start[i] * shape.QDim, n[i] * shape.QDim), par);
            // Twice: the second step reuses the batch's buffers.
            for (int round = 0; round < 2; round++)
            {
                var got = new float[q.Length];
                got.AsSpan().Fill(float.NaN);
                batch.Clear();
                for (int i = 0; i < seqs.Length; i++) Assert.True(batch.TryAdd(seqs[i], start[i], n[i]));
                batch.Attend(layer, q, got, par);
                for (int j = 0; j < want.Length; j++)
                    Assert.True(BitConverter.SingleToInt32Bits(want[j]) == BitConverter.SingleToInt32Bits(got[j]),
                        $"{spec} layer {layer} round {round} output {j} (sequence {Array.FindLastIndex(start, s => s * shape.QDim <= j)}): alone {want[j]:R}, batched {got[j]:R}");
            }
        }
        foreach (var s in seqs) s.Dispose();
    }

    [Fact]
    public void SequencesOfAnotherBlockSizeAreNotTakenIn()
    {
        var shape = Shape(2, 4, 32);
        var a = new PagedKvCache(shape, KvCacheConfig.Parse("f16")).CreateSequence();
        var b = new PagedKvCache(shape, KvCacheConfig.Parse("f16") with { BlockTokens = 16 }).CreateSequence();
        var batch = new BatchAttention();
        Assert.True(batch.TryAdd(a, 0, 1));
        Assert.False(batch.TryAdd(b, 1, 1));
        Assert.Equal(1, batch.Count);
    }
}
