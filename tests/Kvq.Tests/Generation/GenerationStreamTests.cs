using Kvq.Generation;

namespace Kvq.Tests.Generation;

/// <summary><see cref="GenerationStream"/>'s back-pressure, with a fake generator that emits one numbered piece per
/// step until it is cancelled or reaches its last step (the real one is driven in LibraryGuideTests).</summary>
public class GenerationStreamTests
{
    /// <summary>A generator that emits "0", "1", ... and counts the pieces it has started to hand over.</summary>
    private sealed class Counting(int steps, CancellationToken cancel)
    {
        private int _started;
        public int Started => Volatile.Read(ref _started);

        public GenerationResult Run(Action<string> onText)
        {
            int i = 0;
            for (; i < steps; i++)
            {
                if (cancel.IsCancellationRequested) return Result(i, StopReason.Cancelled);
                Interlocked.Increment(ref _started);
                onText(i.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
            return Result(i, StopReason.MaxTokens);
        }

        private static GenerationResult Result(int generated, StopReason reason) =>
            new(string.Concat(Enumerable.Range(0, generated)), 1, generated, 0, 0, reason);
    }

    /// <summary>Waits (a hang is the failure, not a time) until <paramref name="done"/> holds.</summary>
    private static async Task Until(Func<bool> done, string what)
    {
        for (int i = 0; i < 6000 && !done(); i++) await Task.Delay(10);
        Assert.True(done(), $"gave up waiting (60 s): {what}");
    }

    private static async Task<List<string>> Take(IAsyncEnumerator<string> reader, int n)
    {
        var got = new List<string>();
        for (int i = 0; i < n; i++)
        {
            Assert.True(await reader.MoveNextAsync(), $"the stream ended after {i} of {n} pieces");
            got.Add(reader.Current);
        }
        return got;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    public async Task ABoundedProducerWaitsForTheReaderAndCancellationStillEndsIt(int capacity)
    {
        using var cts = new CancellationTokenSource();
        var gen = new Counting(100_000, cts.Token);
        var stream = GenerationStream.Start(gen.Run, capacity, cts.Token);

        // Nobody reads: capacity pieces wait in the channel and one more is in flight (its writer blocked), no more.
        await Until(() => gen.Started == capacity + 1, $"{capacity + 1} pieces started");
        await Task.Delay(200);   // room for a runaway producer to show itself; the bound holds however long this is
        Assert.Equal(capacity + 1, gen.Started);
        Assert.False(stream.Completion.IsCompleted);

        // Each piece read lets exactly one more through, in order.
        await using var reader = stream.GetAsyncEnumerator();
        Assert.Equal(["0", "1"], await Take(reader, 2));
        await Until(() => gen.Started == capacity + 3, $"{capacity + 3} pieces started");
        await Task.Delay(200);
        Assert.Equal(capacity + 3, gen.Started);

        // Cancelling frees the blocked writer (its piece is dropped) without any reading: the producer stops at its
        // next step.
        cts.Cancel();
        var result = await stream.Completion.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(StopReason.Cancelled, result.StopReason);
        Assert.Equal(capacity + 3, result.GeneratedTokens);
        // What was waiting in the channel is still there to read; the dropped in-flight piece is not.
        var rest = new List<string>();
        while (await reader.MoveNextAsync()) rest.Add(reader.Current);
        Assert.Equal(Enumerable.Range(2, capacity).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)), rest);
    }

    [Fact]
    public async Task AReaderThatLeavesItsLoopReleasesABoundedProducer()
    {
        var gen = new Counting(500, CancellationToken.None);
        var stream = GenerationStream.Start(gen.Run, capacity: 2);
        int read = 0;
        await foreach (var piece in stream)
            if (++read == 1) break;
        // Nobody will read the rest: the producer stops waiting and runs to its end; the result has the whole text.
        var result = await stream.Completion.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal((StopReason.MaxTokens, 500), (result.StopReason, result.GeneratedTokens));
        Assert.Equal(500, gen.Started);
    }

    [Fact]
    public async Task WithoutACapacityTheProducerRunsToItsEndUnread()
    {
        // The default: reading is optional, Completion completes with nobody reading, every piece kept.
        var gen = new Counting(3_000, CancellationToken.None);
        var stream = GenerationStream.Start(gen.Run);
        var result = await stream.Completion.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(3_000, result.GeneratedTokens);
        int pieces = 0;
        await foreach (var _ in stream) pieces++;
        Assert.Equal(3_000, pieces);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    public void ACapacityBelowOneIsRefusedBeforeAnythingStarts(int capacity)
    {
        var generator = new Generator(null!, null!);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            generator.GenerateAsync([1], new GenerationOptions { StreamCapacity = capacity }, null!));
        Assert.Contains("StreamCapacity", e.Message);
        Assert.Contains($"got {capacity}", e.Message);
    }
}
