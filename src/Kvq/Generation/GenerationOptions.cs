using Kvq.Sampling;

namespace Kvq.Generation;

public sealed record GenerationOptions
{
    public int MaxTokens { get; init; } = 256;
    public SamplerOptions Sampler { get; init; } = new();
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Null: follow the model's metadata.</summary>
    public bool? AddBos { get; init; }

    /// <summary>For <see cref="Generator.GenerateAsync(string, GenerationOptions, Cache.IKvSequence, CancellationToken)"/>:
    /// how many text pieces the generator may run ahead of the reader before it waits for it (back-pressure); null (the
    /// default): no bound. With a capacity, a reader that stops reading holds the generation after that many pieces
    /// until it reads on, leaves its loop (the rest then goes unread into the result) or the generation is cancelled;
    /// so read the pieces (or cancel) before awaiting <see cref="GenerationStream.Completion"/> alone.</summary>
    /// <remarks>Why no bound by default: reading the pieces is optional (<c>await stream.Completion</c> alone is the
    /// documented way to wait for the whole text), and a bound would hang such callers after that many pieces. The
    /// unbounded buffer costs little memory (at most <see cref="MaxTokens"/> short strings); what it lets a stalled
    /// reader waste is compute, which the cancellation token stops. Kvq's own doors do not use this stream: the CLI's
    /// <c>kvq chat</c>, the server and <c>KvqChatClient</c> read the serving engine's <c>RequestStream</c>, where one
    /// engine step serves every running sequence, so waiting for one slow reader would stall all the others; they read
    /// each token as it comes (to the console, the response body or the caller's enumeration) and cancel when their
    /// reader goes away.</remarks>
    public int? StreamCapacity { get; init; }
}
