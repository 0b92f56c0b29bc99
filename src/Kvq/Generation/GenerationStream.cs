using System.Threading.Channels;

namespace Kvq.Generation;

/// <summary>
/// A generation running in the background, as its caller sees it: text pieces as they become final
/// (<see cref="IAsyncEnumerable{T}"/>), then the result (<see cref="Completion"/>), as the serving engine's
/// <c>RequestStream</c> does for many sequences. Reading the pieces is optional; <see cref="Completion"/> completes
/// either way. Cancelling the token given to <see cref="Generator.GenerateAsync(string, GenerationOptions, Cache.IKvSequence, CancellationToken)"/>
/// stops after the current step with <see cref="StopReason.Cancelled"/>.
/// </summary>
public sealed class GenerationStream : IAsyncEnumerable<string>
{
    private readonly ChannelReader<string> _pieces;

    internal GenerationStream(ChannelReader<string> pieces, Task<GenerationResult> completion)
    {
        _pieces = pieces;
        Completion = completion;
    }

    /// <summary>The result once generation stops; faults with the generator's exception if it failed.</summary>
    public Task<GenerationResult> Completion { get; }

    /// <summary>Text pieces as they are produced; ends when generation stops (and throws if it failed). Cancelling
    /// <paramref name="cancellationToken"/> stops the reading, not the generation.</summary>
    public IAsyncEnumerator<string> GetAsyncEnumerator(CancellationToken cancellationToken = default) =>
        _pieces.ReadAllAsync(cancellationToken).GetAsyncEnumerator(cancellationToken);

    internal static GenerationStream Start(Func<Action<string>, GenerationResult> generate)
    {
        var channel = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var completion = Task.Factory.StartNew(() =>
        {
            try
            {
                var result = generate(piece => channel.Writer.TryWrite(piece));
                channel.Writer.TryComplete();
                return result;
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
                throw;
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        return new GenerationStream(channel.Reader, completion);
    }
}
