using Kvq.Cache;
using Kvq.Cuda.Model;
using Kvq.Model;
using Kvq.Tensors;

namespace Kvq.Cuda.Tests;

/// <summary>The host side of a batched step on the device (BatchLayout), without a GPU: what goes up in the step's one
/// copy (ids, per-row RoPE positions, logit rows) and which batches are refused before any kernel runs.</summary>
public class BatchLayoutTests
{
    private sealed class FakeSequence(int length) : IKvSequence
    {
        public int Length { get; } = length;
        public void BeginChunk(ReadOnlySpan<int> tokens) { }
        public void Append(int layer, ReadOnlySpan<float> k, ReadOnlySpan<float> v, int n) { }
        public void Attend(int layer, ReadOnlySpan<float> q, int n, Span<float> output, Parallelism par) { }
        public void Commit(int n) { }
    }

    [Fact]
    public void StagesIdsPositionsAndLogitRowsInOneArray()
    {
        var a = new FakeSequence(100);
        var b = new FakeSequence(7);
        var c = new FakeSequence(0);
        int[] tokens = [11, 12, 13, 14, 15, 16];
        BatchSegment[] segs =
        [
            new(a, 0, 1, Decode: true, Logits: true),     // decode at position 100
            new(b, 1, 3, Decode: false, Logits: false),   // prompt chunk at 7, 8, 9, no logits
            new(c, 4, 2, Decode: false, Logits: true),    // prompt end at 0, 1
        ];
        var staging = new int[BatchLayout.StagingInts(8)];
        int wanted = BatchLayout.Stage(tokens, segs, 8, 50, staging);
        Assert.Equal(2, wanted);
        Assert.Equal(tokens, staging[..6]);
        Assert.Equal([100, 7, 8, 9, 0, 1], staging[6..12]);
        Assert.Equal([0, 5], staging[12..14]);
    }

    [Fact]
    public void RefusesMalformedBatches()
    {
        var a = new FakeSequence(3);
        var b = new FakeSequence(4);
        var staging = new int[BatchLayout.StagingInts(4)];
        void Bad(int[] tokens, BatchSegment[] segs, string text, int max = 4) =>
            Assert.Contains(text, Assert.ThrowsAny<ArgumentException>(() => BatchLayout.Stage(tokens, segs, max, 50, staging)).Message);
        Bad([1, 2], [new(a, 0, 1, true, true), new(b, 0, 1, true, true)], "does not continue");
        Bad([1, 2], [new(a, 0, 1, false, true), new(b, 1, 1, true, true)], "decode segments must come before");
        Bad([1, 2], [new(a, 0, 1, true, true), new(a, 1, 1, true, true)], "same sequence");
        Bad([1, 2, 3], [new(a, 0, 2, false, true)], "cover 2 of 3");
        Bad([1, 99], [new(a, 0, 2, false, true)], "outside the vocabulary");
        Bad([1, 2, 3, 4, 5], [new(a, 0, 5, false, true)], "exceeds the model's 4");
        Bad([], [], "at least one token");
        Bad([1, 2], [new(a, 0, 3, false, true)], "does not continue");
    }
}
