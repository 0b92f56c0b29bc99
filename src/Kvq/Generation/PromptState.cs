using Kvq.Cache;

namespace Kvq.Generation;

/// <summary>
/// How a generation meets a saved prompt (session files): the window's sequence may already hold the prompt's first
/// tokens (a restored session), with <see cref="RestoredLogits"/> the logits after them; and <see cref="AfterPrompt"/>
/// sees the sequence and the last prompt token's logits once the prompt is in, before the first token is sampled.
/// </summary>
public sealed class PromptState
{
    /// <summary>(vocab) logits after the sequence's last token, used when the sequence already holds the whole prompt.</summary>
    public float[]? RestoredLogits { get; init; }

    /// <summary>Called once the whole prompt is in the sequence, with the logits after its last token (to save a session).</summary>
    public Action<IKvSequence, float[]>? AfterPrompt { get; init; }
}
