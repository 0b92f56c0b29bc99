using System.Threading.Channels;

namespace Kvq.Generation;

/// <summary>
/// A generation running in the background, as its caller sees it: text pieces as they become final
/// (<see cref="IAsyncEnumerable{T}"/>), then the result (<see cref="Completion"/>), as the serving engine's
/// <c>RequestStream</c> does for many sequences. Reading the pieces is optional; <see cref="Completion"/> completes
/// either way, unless <see cref="GenerationOptions.StreamCapacity"/> is set (then the generation waits for a reader:
/// see there). Cancelling the token given to <see cref="Generator.GenerateAsync(string, GenerationOptions, Cache.IKvSequence, CancellationToken)"/>
/// stops after the current step with <see cref="StopReason.Cancelled"/>.
/// </summary>
public sealed class GenerationStream : IAsyncEnumerable<string>
{
    private readonly ChannelReader<string> _pieces;
    // Cancelled when a reading ends (the loop left early, its token cancelled, or the end reached): a bounded producer
    // stops waiting for a reader that will not come back, so Completion still completes.
    private readonly CancellationTokenSource _readerGone;

    private GenerationStream(ChannelReader<string> pieces, CancellationTokenSource readerGone, Task<GenerationResult> completion)
    {
        _pieces = pieces;
        _readerGone = readerGone;
        Completion = completion;
    }

    /// <summary>The result once generation stops; faults with the generator's exception if it failed.</summary>
    public Task<GenerationResult> Completion { get; }

    /// <summary>Text pieces as they are produced; ends when generation stops (and throws if it failed). Cancelling
    /// <paramref name="cancellationToken"/> stops the reading, not the generation.</summary>
    public async IAsyncEnumerator<string> GetAsyncEnumerator(CancellationToken cancellationToken = default)
    {
        try
        {
            await foreach (var piece in _pieces.ReadAllAsync(cancellationToken)) yield return piece;
        }
        finally
        {
            _readerGone.Cancel();
        }
    }

    /// <summary>Runs <paramref name="generate"/> on its own thread, its pieces going to the stream. With a
    /// <paramref name="capacity"/>, a piece that finds that many unread waits (the generator with it) until the reader
    /// takes one, <paramref name="cancel"/> fires, or the reading ends; a piece that cannot wait is dropped from the
    /// stream (the result's text still has it).</summary>
    internal static GenerationStream Start(Func<Action<string>, GenerationResult> generate, int? capacity = null,
        CancellationToken cancel = default)
    {
        var channel = capacity is { } c
            ? Channel.CreateBounded<string>(new BoundedChannelOptions(c) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true, SingleWriter = true })
            : Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var readerGone = new CancellationTokenSource();
        var completion = Task.Factory.StartNew(() =>
        {
            using var stopWaiting = CancellationTokenSource.CreateLinkedTokenSource(cancel, readerGone.Token);
            try
            {
                var result = generate(piece => Write(channel.Writer, piece, stopWaiting.Token));
                channel.Writer.TryComplete();
                return result;
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
                throw;
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        return new GenerationStream(channel.Reader, readerGone, completion);
    }

    /// <summary>Blocks the generator's own (long-running) thread while the channel is full: the generator calls back
    /// synchronously between steps, so this is where back-pressure reaches it.</summary>
    private static void Write(ChannelWriter<string> writer, string piece, CancellationToken stopWaiting)
    {
        if (writer.TryWrite(piece)) return;   // unbounded, or room left
        try
        {
            while (writer.WaitToWriteAsync(stopWaiting).AsTask().GetAwaiter().GetResult())
                if (writer.TryWrite(piece)) return;
        }
        catch (OperationCanceledException) when (stopWaiting.IsCancellationRequested)
        {
            // Cancelled: the generator stops after this step. Reader gone: nobody reads the rest.
        }
    }
}
