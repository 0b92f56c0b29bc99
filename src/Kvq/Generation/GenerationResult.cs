namespace Kvq.Generation;

public enum StopReason { MaxTokens, EndOfGeneration, StopString, ContextFull, Cancelled }

/// <summary>What a generation did and how fast (wall-clock seconds).</summary>
public sealed record GenerationResult(
    string Text, int PromptTokens, int GeneratedTokens, double PromptSeconds, double DecodeSeconds, StopReason StopReason)
{
    public double PromptTokensPerSecond => PromptTokens / Math.Max(PromptSeconds, 1e-9);
    /// <summary>Tokens after the first (the first comes from the prompt's logits) over decode time.</summary>
    public double DecodeTokensPerSecond => Math.Max(0, GeneratedTokens - 1) / Math.Max(DecodeSeconds, 1e-9);
}
