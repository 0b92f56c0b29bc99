namespace Kvq.Model;

/// <summary>
/// A model that runs the tokens of several sequences in one step: each weight matrix is read once for all of
/// them, attention runs per sequence over its own cache. The serving engine's scheduler builds the batches.
/// </summary>
public interface IBatchedLanguageModel : ILanguageModel
{
    /// <summary>Most tokens one step may carry (all segments together).</summary>
    int MaxBatchTokens { get; }

    /// <summary>
    /// Runs <paramref name="tokens"/> split into <paramref name="segments"/> (decode segments first, then prompt
    /// chunks; no sequence twice) and appends each segment to its sequence. Writes the last-row logits of every
    /// segment with <see cref="BatchSegment.Logits"/>, in segment order, as (wanted, vocab) rows of
    /// <paramref name="logits"/>.
    /// </summary>
    void ForwardBatch(ReadOnlySpan<int> tokens, ReadOnlySpan<BatchSegment> segments, Span<float> logits);
}
