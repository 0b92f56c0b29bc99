namespace Kvq.Generation;

public enum StopReason { MaxTokens, EndOfGeneration, StopString, ContextFull, Cancelled }

/// <summary>What a generation did and how fast (wall-clock seconds); <paramref name="ContextShifts"/>: how often a
/// shifting <see cref="ContextWindow"/> dropped old tokens to go on (their re-prefill counts as decode time).</summary>
public sealed record GenerationResult(
    string Text, int PromptTokens, int GeneratedTokens, double PromptSeconds, double DecodeSeconds, StopReason StopReason,
    int ContextShifts = 0)
{
    public double PromptTokensPerSecond => PromptTokens / Math.Max(PromptSeconds, 1e-9);
    /// <summary>Tokens after the first (the first comes from the prompt's logits) over decode time.</summary>
    public double DecodeTokensPerSecond => Math.Max(0, GeneratedTokens - 1) / Math.Max(DecodeSeconds, 1e-9);
}
