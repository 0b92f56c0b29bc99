namespace Kvq.Serving;

/// <summary>Why a request stopped producing tokens.</summary>
public enum FinishReason
{
    /// <summary>An end-of-generation token or a stop string.</summary>
    Stop,
    /// <summary>Max tokens, or the context is full.</summary>
    Length,
    /// <summary>Cancelled by its caller, or the engine shut down.</summary>
    Cancelled,
}

/// <summary>What a request produced and how it went.</summary>
/// <param name="CachedPromptTokens">Prompt tokens found in the prefix cache (not recomputed).</param>
/// <param name="TimeToFirstToken">From submission to the first generated token; null if none came.</param>
/// <param name="Preemptions">Times the request was preempted (its blocks taken back, later recomputed).</param>
public sealed record CompletionResult(
    string Text, IReadOnlyList<int> Tokens, int PromptTokens, int CompletionTokens, int CachedPromptTokens,
    FinishReason FinishReason, TimeSpan? TimeToFirstToken, TimeSpan Duration, int Preemptions);
