using System.Threading.Channels;

namespace Kvq.Serving;

/// <summary>
/// A submitted request as its caller sees it: tokens as they come (<see cref="IAsyncEnumerable{T}"/>), then the
/// result. Reading the stream is optional; <see cref="Completion"/> completes either way.
/// </summary>
public sealed class RequestStream : IAsyncEnumerable<TokenEvent>
{
    private readonly ChannelReader<TokenEvent> _tokens;

    internal RequestStream(long id, int promptTokens, ChannelReader<TokenEvent> tokens, Task<CompletionResult> completion)
    {
        Id = id;
        PromptTokens = promptTokens;
        _tokens = tokens;
        Completion = completion;
    }

    public long Id { get; }
    public int PromptTokens { get; }

    /// <summary>The result once the request finishes (stop, length or cancellation); faults if the request failed.</summary>
    public Task<CompletionResult> Completion { get; }

    /// <summary>Tokens as they are produced; the enumeration ends when the request finishes (and throws if it failed).</summary>
    public IAsyncEnumerator<TokenEvent> GetAsyncEnumerator(CancellationToken cancellationToken = default) =>
        _tokens.ReadAllAsync(cancellationToken).GetAsyncEnumerator(cancellationToken);
}
